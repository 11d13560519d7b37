import torch


class Model(torch.nn.Module):
    """out[b, h] = (Kb[b, h] > 0)^T @ V[b, h]: per head, the sum of the value rows each key bit selects."""

    def forward(self, V: torch.Tensor, Kb: torch.Tensor) -> torch.Tensor:
        mask = (Kb > 0).double()
        return torch.einsum("bhsm,bhsd->bhmd", mask, V.double()).float()
