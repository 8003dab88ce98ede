"""EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", table 1), shared by the image networks.

In the network's centred input space y (2x − 1 for [0, 1] images, or the
logits), noise and data scales are k = 2 (or 1) times those of x. With σ and
σ_d in y units the raw network F becomes a denoiser

    D(y) = c_skip·y + c_out·F(c_in·y),  c_in = 1/√(σ² + σ_d²),
    c_skip = σ_d²/(σ² + σ_d²),  c_out = σ·σ_d/√(σ² + σ_d²),

and the model returns the score of x: ∇_x log p = k·(D − y)/σ_y² = (D − y)/(k·σ_x²).
F sees unit-variance inputs at every level and has a unit-variance target;
F ≡ 0 gives exactly the score of Gaussian data N(centre, σ_d²).
"""

from keras import ops


def _centring_factor(logit_transform: bool) -> float:
  """k: how much wider y is than x (2 for y = 2x − 1, 1 for logits)."""
  return 1.0 if logit_transform else 2.0


def input_scale(sigma, sigma_data: float, logit_transform: bool):
  """EDM's c_in = 1/√(σ_y² + σ_d,y²): y plus noise at unit variance when the data's std is σ_d.

  sigma: float32 σ_i in the data's units, any shape; sigma_data: σ_d in the
  data's units. Returns c_in with the shape of `sigma`.
  """
  k = _centring_factor(logit_transform)
  return ops.rsqrt(k**2 * (ops.square(sigma) + sigma_data**2))


def edm_coefficients(sigma, sigma_data: float, logit_transform: bool):
  """The three per-example factors of the preconditioned score.

  Args:
    sigma: float32 [N, 1, 1, 1], each example's σ_i in the data's units (x).
    sigma_data: σ_d in the data's units.
    logit_transform: whether y is the logits (k = 1) or 2x − 1 (k = 2).
  Returns:
    (c_in, out_scale, pull), each float32 [N, 1, 1, 1], such that
    score = out_scale·F(c_in·y) − pull·y. That is (D − y)/(k·σ_x²) computed as
    c_out·F/(k·σ_x²) − k·y/(σ_y² + σ_d²): the same value, but without forming
    c_skip·y − y, which at σ_L ≪ σ_d cancels to a thousandth of y and loses
    four digits in float32. With c_in² = 1/(σ_y² + σ_d²) and c_out = σ_y·σ_d·c_in
    (y units), out_scale = k·σ_d·c_in/σ and pull = k·c_in² (σ, σ_d in x units).
  """
  k = _centring_factor(logit_transform)
  c_in = input_scale(sigma, sigma_data, logit_transform)
  return c_in, k * sigma_data * c_in / sigma, k * ops.square(c_in)
