import numpy as np

from bench.curve import minutes_at, plot_curve


def test_minutes_are_spread_over_each_runs_steps_and_add_up():
    runs = [{"from_step": 0, "to_step": 100, "minutes": 10.0},
            {"from_step": 100, "to_step": 300, "minutes": 40.0}]
    np.testing.assert_allclose(minutes_at(np.array([0, 50, 100, 200, 300]), runs),
                               [0, 5, 10, 30, 50])


def test_the_curve_of_a_state_file_is_written(tmp_path):
    state = {"history": [{"step": s, "all": 1.0 / s, "large": 2.0 / s} for s in (10, 20, 30)],
             "runs": [{"from_step": 0, "to_step": 30, "minutes": 3.0}]}
    out = plot_curve(state, tmp_path / "c.png")
    assert out.stat().st_size > 10_000
