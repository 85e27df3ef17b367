"""An example reward-model submission: a linear Bradley–Terry model r(x) = <w, x> fit on the preferences.

``fit(preferences)`` minimizes the ridge-regularized BT loss −log σ(r(x_chosen) − r(x_rejected)) (TRL's
reward-trainer loss) with L-BFGS; ``score(candidates)`` returns ``(..., d) -> (...)`` rewards. Pointwise
data (``.x``, ``.y``) is fit by ridge regression instead.
"""
import torch


class LinearBTRewardModel:
    def __init__(self, l2=1e-3):
        self.l2, self.w = l2, None

    def fit(self, data):
        if hasattr(data, "chosen"):
            diff = (data.chosen - data.rejected).double()
            w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
            opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = torch.nn.functional.softplus(-(diff @ w)).mean() + self.l2 * (w @ w)
                loss.backward()
                return loss

            opt.step(closure)
            self.w = w.detach()
        else:  # pointwise: ridge regression
            x, y = data.x.double(), data.y.double()
            self.w = torch.linalg.solve(x.T @ x + self.l2 * len(y) * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
        return self

    def score(self, candidates):
        return torch.as_tensor(candidates, dtype=torch.float64) @ self.w


def make_reward_model():
    return LinearBTRewardModel()
