import torch


class Model(torch.nn.Module):
    """Y = X @ W.T in fp32, rounded to bf16. (A kernel must also be batch-invariant and deterministic: row i of
    Y may not depend on M or on the other rows; see the task description.)"""

    def forward(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return (X.float() @ W.float().t()).to(torch.bfloat16)
