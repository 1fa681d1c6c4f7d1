import torch

from grukit.nn import GRU


def test_gru_matches_torch_on_a_small_batch():
    torch.manual_seed(0)
    theirs = torch.nn.GRU(4, 5, batch_first=True)
    ours = GRU.from_torch(theirs)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], atol=1e-6, rtol=1e-5)
