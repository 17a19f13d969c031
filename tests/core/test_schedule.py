import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from probekit.core.errors import ProbekitError
from probekit.core.schedule import CleanSchedule, DDPMSchedule


@pytest.mark.parametrize(
    "config",
    [
        {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
        {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"num_train_timesteps": 500, "beta_schedule": "squaredcos_cap_v2"},
    ],
)
def test_alpha_bar_matches_diffusers_scheduler(config):
    ours = DDPMSchedule.from_config(config)
    reference = DDPMScheduler(**config).alphas_cumprod.double().numpy()
    for t in (0, 1, 10, 100, config["num_train_timesteps"] - 1):
        assert ours.point(t).alpha_bar == pytest.approx(reference[t], rel=1e-5)


def test_linear_defaults_are_ddpm_and_derived_numbers_hold():
    schedule = DDPMSchedule()
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    point = schedule.point(99)
    assert point.alpha_bar == pytest.approx(alpha_bar[99])
    assert point.sigma == pytest.approx(math.sqrt((1 - alpha_bar[99]) / alpha_bar[99]))
    assert point.logsnr == pytest.approx(-2 * math.log(point.sigma))
    assert point.model_input == 99


def test_add_noise_is_variance_preserving_form():
    schedule = DDPMSchedule()
    point = schedule.point(500)
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    expected = math.sqrt(point.alpha_bar) * x0.numpy() + math.sqrt(1 - point.alpha_bar) * noise.numpy()
    np.testing.assert_allclose(schedule.add_noise(x0, noise, point).numpy(), expected, rtol=1e-6)


def test_default_grid_spans_noise_and_is_denser_at_low_noise():
    grid = DDPMSchedule().default_grid()
    assert len(grid) >= 8 and grid == sorted(grid) and len(set(grid)) == len(grid)
    assert grid[0] <= 10 and grid[-1] >= 700
    gaps = np.diff(grid)
    assert gaps[: len(gaps) // 2].mean() < gaps[len(gaps) // 2 :].mean()


@pytest.mark.parametrize("bad", [-1, 1000, 2.5, True])
def test_out_of_range_or_non_integer_timesteps_are_refused(bad):
    with pytest.raises(ProbekitError, match="timestep"):
        DDPMSchedule().point(bad)


def test_clean_schedule_has_only_t0():
    point = CleanSchedule().point(0)
    assert point.alpha_bar == 1.0 and point.sigma == 0.0 and point.logsnr == math.inf
    with pytest.raises(ProbekitError, match="clean"):
        CleanSchedule().point(5)


def test_flow_matching_points_against_hand_values():
    import math

    from probekit.core.schedule import FlowMatchingSchedule

    schedule = FlowMatchingSchedule(steps=100)
    point = schedule.point(20)  # s = 0.2
    assert point.sigma == pytest.approx(0.25) and point.logsnr == pytest.approx(2 * math.log(4.0))
    assert point.alpha_bar == pytest.approx(16 / 17) and point.model_input == pytest.approx(0.2)
    assert FlowMatchingSchedule(steps=100, data_at_one=True).point(20).model_input == pytest.approx(0.8)
    assert FlowMatchingSchedule(input_scale=1000).point(500).model_input == pytest.approx(500.0)
    clean, noise = schedule.point(0), schedule.point(100)
    assert (clean.sigma, clean.logsnr) == (0.0, math.inf) and (noise.alpha_bar, noise.logsnr) == (0.0, -math.inf)
    with pytest.raises(ProbekitError, match="0..100"):
        schedule.point(101)
    assert schedule.default_grid()[0] == 0 and max(schedule.default_grid()) <= 100


# -- every noise-relevant scheduler field honoured or refused -------------------------------------

_DIFFUSERS_CONFIGS = [
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
    {"beta_schedule": "linear", "num_train_timesteps": 300, "rescale_betas_zero_snr": True},
    {"beta_schedule": "sigmoid", "beta_start": 2e-4, "beta_end": 0.03, "num_train_timesteps": 700},
    {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 400, "rescale_betas_zero_snr": True},
    {"trained_betas": list(np.linspace(0.002, 0.05, 120))},
    {"trained_betas": list(np.linspace(0.002, 0.05, 120)), "rescale_betas_zero_snr": True},
]


@pytest.mark.parametrize("config", _DIFFUSERS_CONFIGS)
@pytest.mark.parametrize("scheduler_class", ["DDPMScheduler", "DDIMScheduler"])
def test_every_noise_field_matches_the_scheduler_class(config, scheduler_class):
    import diffusers

    if scheduler_class == "DDIMScheduler" and config.get("beta_schedule") == "sigmoid":
        pytest.skip("DDIMScheduler does not build the sigmoid schedule")
    reference = getattr(diffusers, scheduler_class)(**config)
    ours = DDPMSchedule.from_config({"_class_name": scheduler_class, **config})
    expected = reference.alphas_cumprod.double().numpy()
    assert ours.num_train_timesteps == len(expected)
    got = np.array([ours.point(t).alpha_bar for t in range(len(expected))])
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-7)  # diffusers builds them in float32
    # the noised input itself, against the scheduler's own add_noise
    x0, noise = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    for t in (0, len(expected) // 3, len(expected) - 1):
        theirs = reference.add_noise(x0.float(), noise.float(), torch.tensor([t] * 3)).double()
        torch.testing.assert_close(
            ours.add_noise(x0, noise, ours.point(t)), theirs, rtol=1e-4, atol=1e-4
        )  # float32 on their side


def test_zero_terminal_snr_point_is_pure_noise_with_infinite_sigma():
    config = {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "rescale_betas_zero_snr": True,
    }
    reference = DDPMScheduler(**config)
    ours = DDPMSchedule.from_config(config)
    last = ours.point(999)
    assert float(reference.alphas_cumprod[999]) == 0.0
    assert last.alpha_bar == 0.0 and last.sigma == math.inf and last.logsnr == -math.inf
    assert ours.point(300).alpha_bar == pytest.approx(float(reference.alphas_cumprod[300]), rel=1e-5)
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(ours.add_noise(x0, noise, last), noise)
    assert "zero terminal SNR" in ours.describe() and "sigma = inf" in ours.describe()


@pytest.mark.parametrize(
    "config, words",
    [
        ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, "FlowMatchEulerDiscreteScheduler"),
        ({"_class_name": "EDMEulerScheduler"}, "EDMEulerScheduler"),
        ({"_class_name": "EulerDiscreteScheduler", "timestep_type": "continuous"}, "timestep_type"),
        ({"beta_schedule": "cubic"}, "beta_schedule"),
        ({"prediction_type": "flow"}, "prediction_type"),
        ({"trained_betas": [0.1, 1.5]}, "trained_betas"),
    ],
)
def test_noise_changing_fields_that_are_not_supported_are_refused(config, words):
    with pytest.raises(ProbekitError, match=words) as caught:
        DDPMSchedule.from_config(config)
    assert "\n" not in str(caught.value)


def test_sampling_only_fields_do_not_change_the_grid():
    plain = DDPMSchedule.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    sampler = DDPMSchedule.from_config(
        {
            "_class_name": "EulerDiscreteScheduler",
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "use_karras_sigmas": True,
            "timestep_spacing": "trailing",
            "steps_offset": 1,
        }
    )
    assert plain.points(range(0, 1000, 37)) == sampler.points(range(0, 1000, 37))
