"""The method registry: it matches the code that runs, and specs are checked against it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from zerolabel import methods
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError
from zerolabel.methods import MethodKind, Param


def _keyword_arguments(
    function: Callable[..., Any], info: methods.MethodInfo | None = None
) -> dict[str, tuple[str, Any]]:
    """name -> (annotation, default) of the keyword-only arguments, less those the pipeline
    passes besides the parameters: ``info``'s declared inputs and, for a method that takes a
    fitted file, the tensors of that file (annotated ``torch.Tensor``) and the plain arguments
    its kind may carry (:data:`zerolabel.fitted.KINDS`)."""
    from zerolabel.fitted import KINDS, FittedKind

    passed = set(info.inputs) if info else set()
    if info and info.fitted:
        passed |= KINDS.get(info.fitted, FittedKind()).arguments
    return {
        p.name: (str(p.annotation), p.default)
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.name not in passed
        and not (info and info.fitted and "Tensor" in str(p.annotation))
    }


@pytest.mark.parametrize("name", methods.FEATURE_METHODS)
def test_registered_parameters_are_the_functions_keyword_arguments(name):
    from zerolabel.discovery import FUNCTIONS

    info = methods.get(name)
    registered = {p.name: (p.type, p.default) for p in info.params}
    assert registered == _keyword_arguments(FUNCTIONS[name], info)
    # Declared inputs are keyword-only arguments without a default (the pipeline passes them).
    required = {
        k
        for k, (annotation, default) in _keyword_arguments(FUNCTIONS[name]).items()
        if default is inspect.Parameter.empty
        and (k in info.inputs or not (info.fitted and "Tensor" in annotation))  # fitted tensors
    }
    assert info.inputs == required


def test_the_found_and_rps_functions_take_their_inputs_and_fitted_tensors():
    from zerolabel.discovery import FUNCTIONS

    def tensors(name: str) -> set[str]:
        every = inspect.signature(FUNCTIONS[name]).parameters.values()
        return {p.name for p in every if "Tensor" in str(p.annotation)} - {"keys"}

    assert methods.get("found").inputs == {"attention"}
    assert tensors("found") == {"attention", "head_weight", "head_bias"}
    # rps reads the last block's output tokens (its authors' features), not the keys
    assert methods.get("rps").inputs == {"tokens"} and tensors("rps") == {"tokens", "direction"}
    assert (methods.get("found").fitted, methods.get("found").fitted_required) == (
        "found-head",
        False,
    )
    assert (methods.get("rps").fitted, methods.get("rps").fitted_required) == ("rps", True)


def test_every_feature_method_has_a_function_and_the_detector_is_the_only_other():
    from zerolabel.discovery import FUNCTIONS

    assert tuple(FUNCTIONS) == methods.FEATURE_METHODS
    others = [
        info.name for info in methods.METHODS.values() if info.kind is not MethodKind.FEATURES
    ]
    assert others == ["cad"] and methods.get("cad").kind is MethodKind.DETECTOR


def test_detector_parameters_are_keyword_arguments_of_detect():
    from zerolabel.cad.inference import detect

    # Names and types only: the served default threshold (0.5) is stricter than detect's own
    # (0.05), which self-training relies on; the runner always passes the registered values.
    registered = {p.name: p.type for p in methods.get("cad").params}
    accepted = {k: annotation for k, (annotation, _) in _keyword_arguments(detect).items()}
    assert registered == accepted


def test_an_unknown_parameter_is_refused_with_the_allowed_ones_and_their_types():
    with pytest.raises(ConfigError) as caught:
        DiscoverySpec(method="tokencut", params={"tua": 0.2})
    message = str(caught.value)
    assert "no parameter 'tua'" in message
    assert "tau (float in [-1, 1], default 0.2)" in message and "eps (float in (0, 1]" in message
    with pytest.raises(ValueError, match=r"method 'lost' has no parameter 'tau'.*k_patches \(int"):
        DiscoverySpec(method="lost", params={"tau": 0.2})


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        pytest.param("lost", {"k_patches": "many"}, "must be an int", id="string-for-int"),
        pytest.param("lost", {"k_patches": 2.5}, "must be an int", id="float-for-int"),
        pytest.param("lost", {"k_patches": True}, "must be an int", id="bool-for-int"),
        pytest.param("lost", {"k_patches": 0}, r"must be in \[1, 4096\]", id="below-minimum"),
        pytest.param("tokencut", {"eps": 0}, r"must be in \(0, 1\]", id="zero-eps"),
        pytest.param("maskcut", {"max_objects": -1}, r"must be in \[0, 20\]", id="negative-count"),
        pytest.param("maskcut", {"min_area_frac": 1.5}, r"must be in \[0, 1\]", id="above-max"),
        pytest.param("tokencut", {"tau": float("nan")}, "finite", id="nan"),
        pytest.param("cad", {"score_threshold": "high"}, "must be a float", id="string-for-float"),
    ],
)
def test_ill_typed_or_out_of_range_values_are_refused_naming_the_parameter(method, params, message):
    name = next(iter(params))
    with pytest.raises(ConfigError, match=message) as caught:
        DiscoverySpec(method=method, params=params)
    assert f"parameter {name!r} of method {method!r}" in str(caught.value)
    assert methods.get(method).allowed() in str(caught.value)


def test_values_are_stored_typed_so_equal_settings_give_one_version():
    as_int = DiscoverySpec(method="tokencut", params={"tau": 0})
    assert as_int.params == {"tau": 0.0} and isinstance(as_int.params["tau"], float)
    assert (
        as_int.model_version()
        == DiscoverySpec(method="tokencut", params={"tau": 0.0}).model_version()
    )


def test_command_line_strings_are_typed_by_the_registry():
    parsed = methods.get("maskcut").parse_params({"max_objects": "5", "tau": "0.2"})
    assert parsed == {"max_objects": 5, "tau": 0.2}
    assert isinstance(parsed["max_objects"], int) and isinstance(parsed["tau"], float)
    with pytest.raises(ConfigError, match="'max_objects' of method 'maskcut' must be an int"):
        methods.get("maskcut").parse_params({"max_objects": "2.5"})
    with pytest.raises(ConfigError, match="no parameter 'tua'"):
        methods.get("tokencut").parse_params({"tua": "0.2"})


def test_boolean_parameters_take_words_and_refuse_numbers():
    flag = Param("refine", "bool", False)
    assert flag.parse("yes") is True and flag.parse("0") is False
    with pytest.raises(ValueError, match="true or false"):
        flag.check(1)
    assert flag.describe() == "refine (bool, default False)"


def test_unknown_method_and_max_side_rules():
    with pytest.raises(ConfigError, match="unknown method 'yolo': use one of lost, tokencut"):
        methods.get("yolo")
    assert DiscoverySpec(max_side=0).max_side == 0  # 0: full resolution
    with pytest.raises(ConfigError, match="max_side must be >= 0"):
        DiscoverySpec(max_side=-1)


def test_default_sizes_and_the_parameter_names_options_accept():
    assert [methods.get(m).default_max_side for m in ("lost", "tokencut", "maskcut", "cad")] == [
        1024,
        1024,
        480,
        None,
    ]
    assert methods.get("found").default_max_side == methods.get("rps").default_max_side == 1024
    assert [methods.get(m).default_max_side for m in ("dinoseg", "dss", "promerge")] == [
        1024,
        1024,
        480,
    ]
    assert "k_patches" in methods.param_names() and "score_threshold" in methods.param_names()


@pytest.mark.parametrize("method", sorted(methods.METHODS))
def test_every_numeric_parameter_has_a_maximum_so_the_worst_job_is_bounded(method):
    for param in methods.get(method).params:
        if param.type in ("int", "float"):
            assert param.maximum is not None, f"{method}.{param.name} has no maximum"


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        pytest.param(
            "maskcut", {"max_objects": 1000, "min_area_frac": 1.0}, r"\[0, 20\]", id="cuts"
        ),
        pytest.param("lost", {"k_patches": 10**9}, r"\[1, 4096\]", id="seeds"),
        pytest.param("promerge", {"stride": 10**6}, r"\[4, 64\]", id="stride"),
        pytest.param("tokencut", {"eps": 1e300}, r"\(0, 1\]", id="eps"),
    ],
)
def test_values_that_would_hold_a_worker_are_refused(method, params, message):
    with pytest.raises(ConfigError, match=message):
        methods.get(method).check_params(params)
