"""grukit.text.sequences: padding, lengths ↔ masks and the length-bucketed batcher every estimator trains on."""

import json

import numpy as np
import pytest
import torch

from grukit.text import BucketBatches, lengths_to_mask, mask_to_lengths, pad_sequences


def test_pad_sequences_right_pads_lists_arrays_and_tensors():
    batch, lengths = pad_sequences([[1, 2, 3], np.array([4]), torch.tensor([5, 6])], torch.int64)
    assert batch.dtype == torch.int64 and lengths.tolist() == [3, 1, 2]
    assert batch.tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]


def test_pad_sequences_keeps_feature_axes_and_casts():
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(t, 2, 3)) for t in (4, 2)]  # float64
    batch, lengths = pad_sequences(series, torch.float32, value=-1.0)
    assert batch.shape == (2, 4, 2, 3) and batch.dtype == torch.float32 and lengths.tolist() == [4, 2]
    torch.testing.assert_close(batch[1, :2], torch.as_tensor(series[1], dtype=torch.float32))
    assert bool((batch[1, 2:] == -1).all())


def test_pad_sequences_infers_the_dtype_cuts_and_allows_empty_rows():
    batch, lengths = pad_sequences([torch.tensor([1.5, 2.5, 3.5]), torch.tensor([])], max_length=2)
    assert batch.dtype == torch.float32 and batch.tolist() == [[1.5, 2.5], [0.0, 0.0]]
    assert lengths.tolist() == [2, 0]


def test_pad_sequences_errors_name_the_problem():
    with pytest.raises(ValueError, match="non-empty list of sequences"):
        pad_sequences([])
    with pytest.raises(ValueError, match=r"shape \(time, 3\) like sequence 0, sequence 1 has shape \(2, 4\)"):
        pad_sequences([np.zeros((1, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="max_length to be a positive integer or None, got 0"):
        pad_sequences([[1]], max_length=0)
    with pytest.raises(ValueError, match="sequence 1 is a scalar"):
        pad_sequences([[1], 2])


def test_lengths_and_masks_convert_both_ways():
    lengths = torch.tensor([3, 1, 0])
    mask = lengths_to_mask(lengths, 4)
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False], [False] * 4]
    assert lengths_to_mask(lengths).shape == (3, 3)
    assert mask_to_lengths(mask).tolist() == [3, 1, 0]
    assert mask_to_lengths(torch.tensor([[1, 1, 0]])).tolist() == [2]  # numeric masks are read as booleans


def test_mask_to_lengths_refuses_masks_lengths_cannot_express():
    with pytest.raises(ValueError, match=r"right-padded masks only .*\(first in row 1;"):
        mask_to_lengths(torch.tensor([[True, True], [False, True]]))  # left padding
    with pytest.raises(ValueError, match="GRU supports right-padded masks only"):
        mask_to_lengths(torch.tensor([[True, False, True]]), owner="GRU")  # a gap
    with pytest.raises(ValueError, match=r"expected a mask of shape \(batch, time\), got \(3,\)"):
        mask_to_lengths(torch.ones(3, dtype=torch.bool))


def _padding(batches, lengths) -> int:
    return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)


def test_bucket_batches_see_every_sample_once_and_save_padding():
    lengths = np.random.default_rng(1).integers(1, 200, size=1000)
    bucketed = BucketBatches(1000, 16, lengths=lengths, shuffle=True, seed=0)
    plain = BucketBatches(1000, 16, shuffle=True, seed=0)
    for batches in (list(bucketed), list(plain)):
        assert len(batches) == 63 and sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert _padding(list(bucketed), lengths) < _padding(list(plain), lengths) / 10


def test_bucket_batches_repeat_with_a_seed_and_reshuffle_every_epoch():
    lengths = [5, 1, 4, 2, 9, 3, 3, 7, 1, 6]
    batches = BucketBatches(10, 3, lengths=lengths, shuffle=True, pool=2, seed=0)
    first, second = [b.tolist() for b in batches], [b.tolist() for b in batches]
    # Pinned: the estimators' results depend on exactly this order (seeded numpy permutation, pools of
    # pool · batch_size sorted by length with a stable sort, then the batches permuted).
    assert first == [[3, 6, 5], [8, 1, 0], [2, 7, 4], [9]]
    assert second == [[4], [1, 8, 3], [6, 2, 0], [5, 9, 7]]
    again = BucketBatches(10, 3, lengths=lengths, shuffle=True, pool=2, seed=0)
    assert [b.tolist() for b in again] == first
    generator = np.random.default_rng(0)
    shared = BucketBatches(10, 3, lengths=lengths, shuffle=True, pool=2, seed=generator)
    assert [b.tolist() for b in shared] == first  # a generator passed in is used, and advanced, as it is
    assert generator.bit_generator.state != np.random.default_rng(0).bit_generator.state


def test_bucket_batches_resume_from_their_state():
    batches = BucketBatches(40, 4, lengths=np.arange(40) % 9, shuffle=True, seed=7)
    list(batches)
    state = json.loads(json.dumps(batches.state_dict()))  # the trainer keeps it as JSON
    following = [b.tolist() for b in batches]
    resumed = BucketBatches(40, 4, lengths=np.arange(40) % 9, shuffle=True, seed=0)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == following
    assert BucketBatches(4, 2, seed=None).state_dict() is None
    with pytest.raises(ValueError, match="state that does not match the generator"):
        BucketBatches(4, 2, seed=None).load_state_dict(state)


def test_bucket_batches_without_a_seed_follow_torchs_global_generator():
    batches = BucketBatches(50, 4, lengths=np.arange(50) % 7, shuffle=True, seed=None)
    torch.manual_seed(3)
    first = [b.tolist() for b in batches]
    torch.manual_seed(3)
    assert [b.tolist() for b in batches] == first  # what a resumed checkpoint relies on
    assert [b.tolist() for b in batches] != first


def test_bucket_batches_in_order_and_built_by_make_batch():
    batches = BucketBatches(7, 3, make_batch=lambda index: index * 10)
    assert len(batches) == 3 and [b.tolist() for b in batches] == [[0, 10, 20], [30, 40, 50], [60]]
    sorted_pools = BucketBatches(6, 2, lengths=[3, 2, 1, 6, 5, 4], pool=1)
    assert [b.tolist() for b in sorted_pools] == [[1, 0], [2, 3], [5, 4]]  # each pool of 2 sorted by length


def test_bucket_batches_errors_name_the_problem():
    with pytest.raises(ValueError, match="no samples to make batches from"):
        BucketBatches(0, 4)
    with pytest.raises(ValueError, match="batch_size to be a positive integer, got 0"):
        BucketBatches(5, 0)
    with pytest.raises(ValueError, match=r"lengths of shape \(5,\), got \(4,\)"):
        BucketBatches(5, 2, lengths=[1, 2, 3, 4])
