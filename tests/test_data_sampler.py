"""WindowSampler: windows never cross episodes, k covers the horizons, streaming == resident."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lejepa_core.data.generate import generate_dataset
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.data.sampler import Batch, WindowSampler
from lejepa_core.data.writer import TrajectoryWriter
from lejepa_core.errors import DatasetError

LENGTHS = (5, 12, 3, 9, 20, 7)


@pytest.fixture
def path(tmp_path, write_trajectory_file):
    p = tmp_path / "d.h5"
    write_trajectory_file(p, lengths=LENGTHS, states=True)
    return p


def _check_windows(batch: Batch, data_path, w: int):
    """Every window inside its episode, and equal to a direct slice of the file."""
    arrays_obs = TrajectoryData.open(data_path, on_device="always")
    obs, states, offsets = arrays_obs.observations, arrays_obs.states, arrays_obs.episode_offsets
    for i in range(len(batch.k)):
        e, t, k = int(batch.episode[i]), int(batch.t[i]), int(batch.k[i])
        start, stop = int(offsets[e]), int(offsets[e + 1])
        assert t - (w - 1) >= 0 and start + t + k <= stop - 1
        row = start + t
        assert torch.equal(batch.context_obs[i], obs[row - w + 1 : row + 1])
        assert torch.equal(batch.target_obs[i], obs[row + k])
        assert torch.equal(batch.context_state[i], states[row - w + 1 : row + 1])
        assert torch.equal(batch.target_state[i], states[row + k])
        # the observation encodes (episode, step): 1000 * e + step
        assert int(batch.target_obs[i, 0, 0]) == 1000 * e + t + k
    arrays_obs.close()


@pytest.mark.parametrize("on_device", ["always", "never"])
def test_windows_stay_inside_episodes(path, on_device):
    with TrajectoryData.open(path, on_device=on_device) as data:
        sampler = WindowSampler(data, torch.arange(6), context_frames=3, horizons=(1, 2, 5))
        batch = sampler.sample(200, torch.Generator().manual_seed(0))
        assert batch.context_obs.shape == (200, 3, 2, 3) and batch.target_obs.shape == (200, 2, 3)
        assert batch.context_state.shape == (200, 3, 2, 2) and batch.k.dtype == torch.int64
        _check_windows(batch, path, w=3)
        # episode 2 (3 steps) never fits W=3 plus k >= 1
        assert 2 not in batch.episode.tolist()


def test_streaming_and_resident_give_identical_batches(path):
    with (
        TrajectoryData.open(path, on_device="always", normalize=True) as resident,
        TrajectoryData.open(path, on_device="never", normalize=True) as streamed,
    ):
        a = WindowSampler(resident, torch.tensor([0, 1, 3, 4]), context_frames=2, horizons=(1, 3))
        b = WindowSampler(streamed, torch.tensor([0, 1, 3, 4]), context_frames=2, horizons=(1, 3))
        ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        for _ in range(3):
            x, y = a.sample(64, ga), b.sample(64, gb)
            for field in (
                "context_obs",
                "target_obs",
                "k",
                "context_state",
                "target_state",
                "episode",
                "t",
            ):
                assert torch.equal(getattr(x, field), getattr(y, field)), field
        assert x.context_obs.dtype == torch.float32


def test_k_distribution_and_window_uniformity(path):
    with TrajectoryData.open(path) as data:
        sampler = WindowSampler(data, torch.arange(6), context_frames=2, horizons=(1, 4, 8))
        batch = sampler.sample(30_000, torch.Generator().manual_seed(1))
    counts = torch.bincount(batch.k, minlength=9)[[1, 4, 8]].double() / 30_000
    torch.testing.assert_close(
        counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0
    )
    # for k = 8 only episodes 1 (12 steps) and 4 (20 steps) fit: 12-8-1=3 and 20-8-1=11 windows
    eight = batch.k == 8
    assert set(batch.episode[eight].tolist()) == {1, 4}
    share = (batch.episode[eight] == 4).double().mean().item()
    assert share == pytest.approx(11 / 14, abs=0.03)
    assert sampler.num_windows == {1: 3 + 10 + 1 + 7 + 18 + 5, 4: 7 + 4 + 15 + 2, 8: 14}


def test_only_requested_episodes(path):
    with TrajectoryData.open(path) as data:
        train, val = torch.tensor([1, 4]), torch.tensor([3])
        b = WindowSampler(data, val, context_frames=2, horizons=(1,)).sample(
            50, torch.Generator().manual_seed(0)
        )
        assert set(b.episode.tolist()) == {3}
        b = WindowSampler(data, train, context_frames=2, horizons=(1,)).sample(
            50, torch.Generator().manual_seed(0)
        )
        assert set(b.episode.tolist()) <= {1, 4}


def test_fixed_batches_reproducible_and_fixed_k(path):
    with TrajectoryData.open(path) as data:
        sampler = WindowSampler(data, torch.arange(6), context_frames=2, horizons=(1, 2))
        first = sampler.fixed_batches(16, 3, seed=7)
        again = sampler.fixed_batches(16, 3, seed=7)
        assert len(first) == 3
        for x, y in zip(first, again, strict=True):
            assert torch.equal(x.context_obs, y.context_obs) and torch.equal(x.t, y.t)
        assert not torch.equal(first[0].t, first[1].t)
        fixed = sampler.fixed_batches(64, 2, seed=0, k=6)  # k outside the training horizons
        for b in fixed:
            assert (b.k == 6).all()
        _check_windows(fixed[0], data.path, w=2)


def test_no_window_fits_names_the_numbers(path):
    with TrajectoryData.open(path) as data:
        with pytest.raises(
            DatasetError,
            match=r"context_frames=4 \+ max horizon 17 needs episodes of at least 21 steps, the longest of the 6 episodes has 20",
        ):
            WindowSampler(data, torch.arange(6), context_frames=4, horizons=(1, 17))


def test_integer_observations_have_no_state(tmp_path):
    p = tmp_path / "g.h5"
    grid = np.arange(40 * 3 * 3, dtype=np.int64).reshape(40, 3, 3).astype(np.int8)
    with TrajectoryWriter(
        p, obs_shape=(3, 3), obs_dtype="int8", action_shape=(), action_dtype="int64"
    ) as wr:
        wr.append(grid, np.zeros(40, np.int64), lengths=[20, 20], seeds=[0, 1])
    with TrajectoryData.open(p, normalize=True) as data:
        assert data.states is None and data.state_shape is None
        assert data.observations.dtype == torch.int8  # normalize leaves non-float data alone
        b = WindowSampler(data, torch.arange(2), context_frames=2, horizons=(3,)).sample(
            8, torch.Generator()
        )
        assert (
            b.context_state is None and b.target_state is None and b.context_obs.dtype == torch.int8
        )


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("states", [False, True])
def test_rows_are_the_same_resident_or_streamed(tmp_path, normalize, states, write_trajectory_file):
    p = tmp_path / "d.h5"
    arrays = write_trajectory_file(p, lengths=LENGTHS, states=states)
    idx = np.array([23, 0, 7, 7, 1, 55, 23, 12])  # any order, repeats
    got = {}
    for on_device in ("always", "never"):
        with TrajectoryData.open(p, on_device=on_device, normalize=normalize) as data:
            assert data.resident == (on_device == "always") and data.device.type == "cpu"
            obs, state_rows = data.rows(idx)
            assert obs.shape == (8, 2, 3) and obs.device == data.device
            got[on_device] = obs, state_rows
            if normalize:  # (raw - mean) / std with the file's per-feature statistics
                raw = arrays["observations"][idx]
                expected = (raw - np.asarray(data.stats["mean"])) / np.asarray(data.stats["std"])
                np.testing.assert_allclose(obs.numpy(), expected, rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(obs, torch.from_numpy(arrays["observations"][idx]))
    expected_states = arrays["states"] if states else arrays["observations"]  # raw either way
    for obs, state_rows in got.values():
        assert torch.equal(obs, got["always"][0])
        assert torch.equal(state_rows, torch.from_numpy(expected_states[idx]))


@pytest.mark.parametrize("compression", ["auto", "lzf", "gzip"])
def test_streaming_reads_compressed_and_raw_files_alike(tmp_path, compression):
    p = tmp_path / f"{compression}.h5"
    obs = _write_compressed(p, compression)
    with TrajectoryData.open(p, on_device="never") as data:
        rows = np.array([0, 1, 2, 999, 1000, 1001, 1500, 2999])
        got, states = data.read_rows(rows)
        assert torch.equal(got, torch.from_numpy(obs[rows])) and torch.equal(states, got)
        mapped = data._readers["observations"].memmap is not None
        assert mapped == (compression == "auto")  # raw float data is memory-mapped
        b = WindowSampler(data, torch.arange(3), context_frames=4, horizons=(1, 9)).sample(
            64, torch.Generator()
        )
        np.testing.assert_array_equal(
            b.target_obs.numpy(), obs[data.episode_offsets[b.episode] + b.t + b.k]
        )


def test_check_source_names_the_mismatch(tmp_path):
    path = generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=2,
        steps=5,
        out=tmp_path / "b.h5",
        env_kwargs={"num_balls": 2},
        progress=False,
    )
    with TrajectoryData.open(path) as data:
        data.check_source("lejepa/BouncingBalls-v0", {"num_balls": 2})
        with pytest.raises(
            DatasetError,
            match=r'b.h5: generated from lejepa/BouncingBalls-v0 \{"num_balls": 2\}, but data',
        ):
            data.check_source("lejepa/BouncingBalls-v0", {"num_balls": 3})


def _write_compressed(p, compression, n=3000):
    obs = np.random.default_rng(0).normal(size=(n, 5, 4)).astype(np.float32)
    with TrajectoryWriter(
        p,
        obs_shape=(5, 4),
        obs_dtype="float32",
        action_shape=(),
        action_dtype="int8",
        compression=compression,
    ) as writer:
        writer.append(obs, np.zeros(n, np.int8), lengths=[1000, 1500, 500], seeds=[0, 1, 2])
    return obs


@pytest.mark.parametrize("compression", ["auto", "lzf"])
def test_prefetch_gives_the_same_batches_as_no_prefetch(tmp_path, compression):
    """Same seed, same batches: with and without the background prefetch, and the caller's
    generator ends in the same state (checkpoints resume identically)."""
    p = tmp_path / f"{compression}.h5"
    _write_compressed(p, compression)
    with TrajectoryData.open(p, on_device="never") as data:
        plain = WindowSampler(
            data, torch.arange(3), context_frames=4, horizons=(1, 9), prefetch=False
        )
        fetching = WindowSampler(data, torch.arange(3), context_frames=4, horizons=(1, 9))
        assert fetching.prefetch and not plain.prefetch  # streamed data: on by default
        g_plain, g_fetch = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        sizes = [64, 64, 64, 32, 32, 64]  # a batch-size change drops the prefetched batch
        for i, size in enumerate(sizes):
            if i == 4:  # a caller that reseeds: the prefetched batch is not used
                g_plain.manual_seed(11)
                g_fetch.manual_seed(11)
            a, b = plain.sample(size, g_plain), fetching.sample(size, g_fetch)
            for name in ("context_obs", "target_obs", "k", "episode", "t", "context_state"):
                assert torch.equal(getattr(a, name), getattr(b, name)), (i, name)
            assert torch.equal(g_plain.get_state(), g_fetch.get_state())
        # validation batches drawn while a prefetch is in flight are unaffected
        assert torch.equal(
            fetching.fixed_batches(16, 1, seed=3)[0].target_obs,
            plain.fixed_batches(16, 1, seed=3)[0].target_obs,
        )
        fetching.close()
        c = fetching.sample(8, torch.Generator().manual_seed(1))  # starts again after close
        assert torch.equal(c.t, plain.sample(8, torch.Generator().manual_seed(1)).t)
        fetching.close()


def test_resident_data_does_not_prefetch(path):
    with TrajectoryData.open(path, on_device="always") as data:
        assert not WindowSampler(data, torch.arange(6), context_frames=2, horizons=(1,)).prefetch


def test_compressed_reads_decompress_each_chunk_once(tmp_path, monkeypatch):
    """Whole-chunk gathers: a read touching a chunk many times asks HDF5 for it once, and a
    later read is served from the decompressed cache."""
    p = tmp_path / "lzf.h5"
    obs = _write_compressed(p, "lzf")
    with TrajectoryData.open(p, on_device="never") as data:
        data._open_readers()
        reader = data._readers["observations"]
        assert reader.memmap is None and reader.ds.chunks[0] < 3000
        calls = []
        original = reader._chunk.__func__

        def counting(self, chunk, chunk_rows):
            calls.append((chunk, chunk in self._chunks))
            return original(self, chunk, chunk_rows)

        monkeypatch.setattr(type(reader), "_chunk", counting)
        rows = np.unique(np.random.default_rng(1).integers(0, 3000, 400))
        got, _ = data.read_rows(rows)
        assert torch.equal(got, torch.from_numpy(obs[rows]))
        touched = sorted(set((rows // reader.ds.chunks[0]).tolist()))
        assert [c for c, _ in calls] == touched and not any(hit for _, hit in calls)
        calls.clear()
        data.read_rows(rows[:50])
        assert calls and all(hit for _, hit in calls)
