"""The prediction model on synthetic access streams."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachefs.data import prediction
from cachefs.data.prediction import Predictor, SiblingOrder, natural_key

SEASON = [f"Show S01E{n:02d}.mkv".encode() for n in range(1, 11)]


def listing_of(names: dict[bytes, list[bytes]]) -> prediction.Siblings:
    orders = {d: SiblingOrder(files) for d, files in names.items()}
    return orders.get


def best(predictions: list[prediction.Prediction]) -> tuple[bytes, float] | None:
    return (predictions[0].path, predictions[0].confidence) if predictions else None


def test_natural_order_counts_numbers_as_numbers() -> None:
    names = [b"ep10.mkv", b"ep2.mkv", b"ep1.mkv", b"Track 7.flac", b"track 10.flac"]
    assert sorted(names, key=natural_key) == [
        b"ep1.mkv",
        b"ep2.mkv",
        b"ep10.mkv",
        b"Track 7.flac",
        b"track 10.flac",
    ]


def test_the_next_episode_is_predicted_and_gains_confidence_in_order() -> None:
    model = Predictor(window_size=10)
    siblings = listing_of({b"TV/Show": [*SEASON, b"Show S01E01.srt", b"poster.jpg"]})
    first = model.opened(b"TV/Show/" + SEASON[0], siblings)
    assert best(first) == (b"TV/Show/" + SEASON[1], 0.5)  # nothing known: even odds
    confidences = []
    for episode, following in itertools.pairwise(SEASON[1:6]):
        path, confidence = best(model.opened(b"TV/Show/" + episode, siblings)) or (b"", 0.0)
        assert path == b"TV/Show/" + following  # never the .srt or the poster
        confidences.append(confidence)
    assert confidences == sorted(confidences) and confidences[-1] > 0.8


def test_a_shuffled_directory_stops_being_predicted() -> None:
    model = Predictor(window_size=10)
    tracks = [f"{n:02d} - song.flac".encode() for n in range(1, 21)]
    siblings = listing_of({b"Album": tracks})
    order = tracks[:]
    random.Random(7).shuffle(order)
    confident = [
        p for name in order for p in model.opened(b"Album/" + name, siblings) if p.confidence >= 0.5
    ]
    # At most the first guess (before anything was known) passes the default threshold.
    assert len(confident) <= 1


def test_a_learnt_successor_is_predicted_across_directories() -> None:
    model = Predictor(window_size=10)
    nothing = listing_of({})
    for _ in range(3):
        model.opened(b"Trailers/film.mkv", nothing)
        model.opened(b"Films/film (2021).mkv", nothing)
        model.opened(b"Music/other.flac", nothing)
    predicted = model.predict(b"Trailers/film.mkv", nothing)
    assert best(predicted) is not None
    path, confidence = best(predicted) or (b"", 0.0)
    assert path == b"Films/film (2021).mkv" and confidence > 0.5
    assert all(p.why == "history" for p in predicted)


def test_one_observation_is_never_certainty() -> None:
    model = Predictor(window_size=10)
    nothing = listing_of({})
    model.opened(b"a", nothing)
    model.opened(b"b", nothing)
    assert best(model.predict(b"a", nothing)) == (b"b", 0.5)


def test_the_model_survives_a_round_trip_and_merges() -> None:
    model = Predictor(window_size=10)
    siblings = listing_of({b"S": SEASON})
    for episode in SEASON[:4]:
        model.opened(b"S/" + episode, siblings)
    restored = Predictor(window_size=10)
    restored.load_json(model.to_json())
    assert restored.predict(b"S/" + SEASON[3], siblings) == model.predict(
        b"S/" + SEASON[3], siblings
    )
    assert restored.predict(b"S/" + SEASON[0], siblings) == model.predict(
        b"S/" + SEASON[0], siblings
    )


def test_what_it_remembers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prediction, "MAX_FILES", 50)
    monkeypatch.setattr(prediction, "MAX_DIRS", 10)
    model = Predictor(window_size=5)
    for n in range(1000):
        model.opened(f"d{n % 97}/f{n}".encode(), listing_of({}))
    assert model.tracked_files() <= 50
    assert len(model._dirs) <= 10


@settings(max_examples=200, deadline=None)
@given(
    opens=st.lists(
        st.sampled_from([b"a/1.mkv", b"a/2.mkv", b"a/3.mkv", b"b/x", b"b/y"]), max_size=40
    )
)
def test_predictions_are_sane_whatever_the_stream(opens: list[bytes]) -> None:
    model = Predictor(window_size=4)
    siblings = listing_of({b"a": [b"1.mkv", b"2.mkv", b"3.mkv"], b"b": [b"x", b"y"]})
    for path in opens:
        predicted = model.opened(path, siblings)
        assert all(0.0 < p.confidence < 1.0 for p in predicted)
        assert path not in {p.path for p in predicted}
        assert len({p.path for p in predicted}) == len(predicted)
