"""Figures: score fields, sample scatters, mixture weights, image grids, GIFs.

Matplotlib with the Agg backend (no display needed). Every writer saves to a
temporary file and renames it, so a figure on disk is never half-written.
"""

import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ncsn_tf.runtime import artifacts  # noqa: E402


def save_figure(fig, path: str, dpi: int = 110):
  with artifacts.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=dpi, bbox_inches='tight')
  plt.close(fig)


def figure_to_array(fig, dpi: int = 80) -> np.ndarray:
  """RGB uint8 [H, W, 3] rendering of `fig` (for tf.summary.image); keeps fig open."""
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
  buf.seek(0)
  return np.asarray(Image.open(buf).convert('RGB'))


def grid_points(radius: float, n: int) -> np.ndarray:
  """[n*n, 2] points of a square grid on [-radius, radius]^2 (row-major, y outer)."""
  axis = np.linspace(-radius, radius, n, dtype=np.float32)
  xx, yy = np.meshgrid(axis, axis)
  return np.stack([xx.ravel(), yy.ravel()], axis=-1)


def score_field_figure(points, exact, learned, density, radius: float, title: str):
  """Exact field | learned field | ‖difference‖ over the density.

  points/exact/learned: [n*n, 2] on `grid_points(radius, n)`; density [m*m] on
  `grid_points(radius, m)`, drawn as the background.
  """
  n = int(round(np.sqrt(len(points))))
  m = int(round(np.sqrt(len(density))))
  error = np.linalg.norm(learned - exact, axis=-1).reshape(n, n)
  fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.4))
  extent = [-radius, radius, -radius, radius]
  for ax, field, name in ((axes[0], exact, 'exact score'), (axes[1], learned, 'learned score')):
    ax.imshow(density.reshape(m, m), origin='lower', extent=extent, cmap='Greys', alpha=0.6)
    ax.quiver(points[:, 0], points[:, 1], field[:, 0], field[:, 1], color='tab:blue',
              angles='xy', width=0.004)
    ax.set_title(name)
  im = axes[2].imshow(error, origin='lower', extent=extent, cmap='magma')
  axes[2].contour(*np.meshgrid(np.linspace(-radius, radius, m), np.linspace(-radius, radius, m)),
                  density.reshape(m, m), levels=4, colors='white', linewidths=0.6)
  axes[2].set_title('‖learned − exact‖ (white: data density)')
  fig.colorbar(im, ax=axes[2], fraction=0.046)
  for ax in axes:
    ax.set_xlim(-radius, radius)
    ax.set_ylim(-radius, radius)
    ax.set_aspect('equal')
  fig.suptitle(title)
  return fig


def samples_figure(panels: dict, radius: float, title: str = ''):
  """One scatter per entry of `panels` (name -> [N, 2] samples)."""
  fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8))
  for ax, (name, samples) in zip(np.atleast_1d(axes), panels.items()):
    samples = np.asarray(samples)
    ax.scatter(samples[:, 0], samples[:, 1], s=1.5, alpha=0.5)
    ax.set_xlim(-radius, radius)
    ax.set_ylim(-radius, radius)
    ax.set_aspect('equal')
    ax.set_title(name, fontsize=10)
  if title:
    fig.suptitle(title)
  return fig


def weights_figure(weights: dict, true_weights, labels):
  """Grouped bars: the share of samples at each mode per sampler, and the truth."""
  names = ['true'] + list(weights)
  values = [np.asarray(true_weights)] + [np.asarray(v) for v in weights.values()]
  fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
  width = 0.8 / len(labels)
  for k, label in enumerate(labels):
    ax.bar(np.arange(len(names)) + k * width, [v[k] for v in values], width, label=label)
  ax.set_xticks(np.arange(len(names)) + width * (len(labels) - 1) / 2)
  ax.set_xticklabels(names, rotation=15, fontsize=9)
  ax.set_ylabel('share of samples')
  ax.set_ylim(0, 1)
  ax.legend(fontsize=8)
  ax.set_title('mixture weights recovered by each sampler')
  return fig


def per_sigma_figure(sigmas, values: dict, ylabel: str, title: str, yscale: str = 'log'):
  """One line per entry of `values` ({name: [L] values}) against σ (log axis)."""
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for name, v in values.items():
    ax.plot(sigmas, v, marker='o', markersize=3, label=name)
  ax.set_xscale('log')
  ax.set_yscale(yscale)
  ax.set_xlabel('σ')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=8)
  return fig


def quality_vs_nfe_figure(series: dict, references: dict, ylabel: str, title: str):
  """Sample quality against score evaluations (log axis).

  series: {name: (nfe [K], value [K], stderr [K] or None)}, one line each;
  references: {name: (nfe, value, stderr or None)}, each a horizontal line at
  its value across the plot (shaded ± its stderr) and a marker at its NFE.
  """
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for name, (nfe, value, stderr) in series.items():
    ax.errorbar(nfe, value, yerr=stderr, marker='o', markersize=4, capsize=2, label=name)
  for k, (name, (nfe, value, stderr)) in enumerate(references.items()):
    colour = f'C{(len(series) + k) % 10}'
    ax.axhline(value, color=colour, linestyle='--', linewidth=1)
    if stderr is not None:
      ax.axhspan(value - stderr, value + stderr, color=colour, alpha=0.12)
    ax.plot([nfe], [value], marker='s', color=colour, linestyle='none', label=name)
  ax.set_xscale('log')
  ax.set_xlabel('score evaluations per sample (NFE)')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=7)
  return fig


def image_grid(images, nrow: int | None = None, padding: int = 2) -> np.ndarray:
  """Tiles images float [N, H, W, C] in [0, 1] into one uint8 [H', W', 3] grid."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  n, h, w, c = images.shape
  nrow = nrow or int(np.ceil(np.sqrt(n)))
  ncol = int(np.ceil(n / nrow))
  grid = np.ones((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), np.float32)
  for k in range(n):
    r, q = divmod(k, nrow)
    top, left = padding + r * (h + padding), padding + q * (w + padding)
    grid[top:top + h, left:left + w] = images[k]
  return (grid * 255 + 0.5).astype(np.uint8)


def save_png(array: np.ndarray, path: str):
  with artifacts.atomic_path(path) as tmp:
    Image.fromarray(array).save(tmp)


def save_gif(frames, path: str, duration_ms: int = 120):
  """Animated GIF from uint8 frames [T, H, W, 3]; the last frame is held longer."""
  pictures = [Image.fromarray(f) for f in frames]
  durations = [duration_ms] * (len(pictures) - 1) + [duration_ms * 10]
  with artifacts.atomic_path(path) as tmp:
    pictures[0].save(tmp, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
