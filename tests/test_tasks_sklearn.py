"""grukit's estimators follow scikit-learn's conventions: sklearn's own conformance suite, and the same
properties checked with each estimator's own kind of data (texts, token lists, series, clips), then Pipeline,
clone, pickling, cross_val_score and GridSearchCV(n_jobs=2)."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import SkipTestWarning
from sklearn.model_selection import GridSearchCV, KFold, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.estimator_checks import (
    _get_check_estimator_ids,
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_repr,
    check_estimator_tags_renamed,
    check_estimators_unfitted,
    check_get_params_invariance,
    check_mixin_order,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    check_valid_tag_types,
    estimator_checks_generator,
)
from sklearn.utils.validation import check_is_fitted

from grukit.tasks import Forecaster, SequenceClassifier, SequenceTagger, TextClassifier, Translator, VideoClassifier
from tasks_tiny import CASES, fitted, predictions


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks train fastest on one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# sklearn's conformance suite -------------------------------------------------------------------------------
# SequenceClassifier reads a 2-D float array (n, time) as n univariate series, so sklearn's whole suite runs on
# it. The other five take texts, token lists, one series or 5-D clips: sklearn runs only its cloneability
# check on an estimator whose tags say it takes no 2-D arrays; the properties below are checked on their data.
SEQUENCE = SequenceClassifier(hidden_size=8, filters=(8, 8, 8), epochs=10, min_steps=0, batch_size=32)

# checks that cannot apply, each with the reason (run as strict xfails: one that starts passing fails)
NOT_APPLICABLE = {
    "check_n_features_in": "the second axis of a 2-D X is time, and series of any length are accepted, so "
    "n_features_in_ would describe one length only",
    "check_n_features_in_after_fitting": "series of another length than the training ones are valid input, "
    "so predict does not refuse them",
    "check_classifiers_train": "its last step expects predict to refuse X with another number of columns, "
    "which here are time steps (any length is valid); its accuracy part is test_blobs_as_sklearn_trains_them",
}
# left out of the run: sklearn itself skips it unless SCIPY_ARRAY_API=1 is set before scipy is first imported,
# and grukit declares no array-API support (it takes numpy arrays and converts them to torch)
LEFT_OUT = {"check_array_api_input"}


def _check_name(item) -> str:
    check = item.values[1] if hasattr(item, "values") else item[1]
    return getattr(check, "func", check).__name__


def _sklearn_checks():
    estimators = [SEQUENCE, *(CASES[name][0]() for name in CASES if not name.startswith("sequence"))]
    for estimator in estimators:
        expected = NOT_APPLICABLE if isinstance(estimator, SequenceClassifier) else {}
        for item in estimator_checks_generator(
            estimator, legacy=True, expected_failed_checks=expected, mark="xfail", xfail_strict=True
        ):
            if _check_name(item) not in LEFT_OUT:
                yield item


with warnings.catch_warnings():  # sklearn warns that it runs only cloneability on the five, as said above
    warnings.simplefilter("ignore", SkipTestWarning)
    SKLEARN_CHECKS = list(_sklearn_checks())


@pytest.mark.parametrize(("estimator", "check"), SKLEARN_CHECKS, ids=_get_check_estimator_ids)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_the_suite_ran_in_full_on_the_sequence_classifier():
    names = {_check_name(item) for item in SKLEARN_CHECKS}
    assert len([item for item in SKLEARN_CHECKS if "SequenceClassifier" in repr(item)]) > 50
    assert {"check_estimators_nan_inf", "check_classifiers_regression_target", "check_fit_idempotent"} <= names
    assert set(NOT_APPLICABLE) <= names


def test_blobs_as_sklearn_trains_them():
    """The part of check_classifiers_train that applies: blobs as length-2 series, learned to > 0.83."""
    x, y = make_blobs(n_samples=300, random_state=0)
    x = StandardScaler().fit_transform(x)
    model = clone(SEQUENCE).fit(x.tolist(), y.tolist())
    assert model.predict(x).shape == (300,)
    assert np.mean(model.predict(x) == y) > 0.83


DATA_FREE_CHECKS = [
    check_estimator_tags_renamed,
    check_valid_tag_types,
    check_estimator_repr,
    check_no_attributes_set_in_init,
    check_do_not_raise_errors_in_init_or_set_params,
    check_mixin_order,
    check_parameters_default_constructible,
    check_get_params_invariance,
    check_set_params,
    check_estimators_unfitted,
]


@pytest.mark.parametrize("estimator", [TextClassifier, SequenceTagger, Translator, Forecaster, VideoClassifier])
@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda check: check.__name__)
def test_sklearn_checks_that_need_no_data(estimator, check):
    check(estimator.__name__, estimator())


# The same properties on each estimator's own data ---------------------------------------------------------
ONE_PER_ESTIMATOR = [
    "text_bpe_str_labels",
    "tagger",
    "translator",
    "forecaster",
    "sequence_classifier",
    "video_two_label_columns",
]


@pytest.mark.parametrize("name", ONE_PER_ESTIMATOR)
def test_fit_returns_self_keeps_params_and_sets_only_trailing_underscore_attributes(name):
    make, x, y, _ = CASES[name]
    model = make()
    params = repr(model.get_params())
    before = set(vars(model))
    assert (model.fit(x()) if y() is None else model.fit(x(), y())) is model
    assert repr(model.get_params()) == params
    added = set(vars(model)) - before
    assert added and all(attribute.endswith("_") for attribute in added)
    check_is_fitted(model)


@pytest.mark.parametrize("name", ONE_PER_ESTIMATOR)
def test_fitting_twice_gives_the_same_model_and_predict_changes_nothing(name):
    x_new = CASES[name][3]()
    first, second = fitted(name), fitted(name)
    state = dict(vars(first))
    assert predictions(first, x_new) == predictions(second, x_new)
    assert vars(first).keys() == state.keys() and all(vars(first)[k] is v for k, v in state.items())


@pytest.mark.parametrize("name", ONE_PER_ESTIMATOR)
def test_pickled_in_memory_and_cloned(name):
    x_new = CASES[name][3]()
    model = fitted(name)
    assert predictions(pickle.loads(pickle.dumps(model)), x_new) == predictions(model, x_new)
    fresh = clone(model)
    assert repr(fresh.get_params()) == repr(model.get_params())
    assert not hasattr(fresh, "module_")


@pytest.mark.parametrize("name", [n for n in ONE_PER_ESTIMATOR if n != "forecaster"])
def test_predictions_do_not_depend_on_order_or_batch_mates(name):
    x_new = list(CASES[name][3]())
    model = fitted(name)
    whole = model.predict(x_new)
    reverse = model.predict(x_new[::-1])
    one_by_one = [model.predict(x_new[k : k + 1])[0] for k in range(len(x_new))]
    for k in range(len(x_new)):
        np.testing.assert_array_equal(reverse[len(x_new) - 1 - k], whole[k])
        np.testing.assert_array_equal(one_by_one[k], whole[k])


def _cv_data(name):
    _, x, y, _ = CASES[name]
    return x(), y(), TimeSeriesSplit(n_splits=2, test_size=4) if name == "forecaster" else KFold(2)


@pytest.mark.parametrize("name", ONE_PER_ESTIMATOR)
def test_pipeline_and_cross_val_score(name):
    x, y, cv = _cv_data(name)
    pipeline = make_pipeline(FunctionTransformer(), CASES[name][0]())
    scores = cross_val_score(pipeline, x, y, cv=cv)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    if name != "forecaster":
        assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("name", ONE_PER_ESTIMATOR)
def test_grid_search_in_two_worker_processes(name):
    x, y, cv = _cv_data(name)
    search = GridSearchCV(CASES[name][0](), {"hidden_size": [4, 8]}, cv=cv, n_jobs=2)
    search.fit(x, y)
    assert search.best_params_["hidden_size"] in (4, 8)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    assert best.hidden_size == search.best_params_["hidden_size"]
    check_is_fitted(best)
