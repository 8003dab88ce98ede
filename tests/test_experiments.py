"""The score-matching lab end to end, tiny: every objective through the one trainer."""

import json
import os

import pytest

from ncsn_tf import config as config_lib
from ncsn_tf import losses
from ncsn_tf.lab import experiments


def _tiny(workdir, dataset='gmm', experiment='all'):
  return config_lib.validate(config_lib.Config(
      name='lab_test', workdir=str(workdir), mode='experiment', experiment=experiment,
      data=config_lib.DataConfig(dataset=dataset),
      model=config_lib.ModelConfig(sigma_begin=10.0, sigma_end=1.0, num_scales=3, ngf=16,
                                   num_layers=2),
      train=config_lib.TrainConfig(batch_size=32, train_steps=20, snapshot_freq=20, log_freq=20,
                                   num_projections=2, projection='rademacher'),
      sampling=config_lib.SamplingConfig(n_steps_each=5, num_samples=200, sample_batch_size=200),
      export=config_lib.ExportConfig(export_dir=str(workdir / 'export'))))


def test_lab_on_the_mixture_writes_every_figure_and_number(tmp_path):
  metrics = experiments.run_experiment(_tiny(tmp_path))
  figures = os.listdir(tmp_path / 'figures')
  for loss in experiments.OBJECTIVES:
    assert f'objective_{loss}.png' in figures
    assert os.path.isdir(tmp_path / 'objectives' / loss / 'checkpoints')
    result = metrics['objectives'][loss]
    assert result['sq_error_lowest_density_decile'] >= 0
    assert result['sq_error_highest_density_decile'] >= 0
  for name in ('score_error_vs_density', 'trajectories', 'samplers', 'weights'):
    assert f'{name}.png' in figures
  assert 'fisher_divergence_overall' in metrics['objectives']['anneal_dsm']
  assert 0 <= metrics['mala_acceptance_rate'] <= 1
  assert set(metrics['sample_distances']) == {'langevin_exact', 'mala_exact', 'annealed_exact',
                                              'annealed_learned'}
  assert metrics['mixture_weights']['true'] == pytest.approx([0.2, 0.8])
  with open(tmp_path / 'metrics.json') as f:
    assert json.load(f)['dataset'] == 'gmm'
  assert '| annealed_exact |' in open(tmp_path / 'figures' / 'weights.md').read()
  # A second run restores the trained networks instead of training again.
  again = experiments.run_experiment(_tiny(tmp_path, experiment='weights'))
  assert again['mixture_weights'] == metrics['mixture_weights']


def test_lab_on_the_banana_uses_the_monte_carlo_perturbed_score(tmp_path, monkeypatch):
  monkeypatch.setattr(experiments, 'OBJECTIVES', ('dsm', 'anneal_dsm'))
  metrics = experiments.run_experiment(_tiny(tmp_path, 'banana', 'objectives'))
  assert 'Monte Carlo' in metrics['objectives']['anneal_dsm']['target']
  assert not metrics['has_perturbed_score']
  assert experiments.weights(experiments.Lab(_tiny(tmp_path, 'banana'))) == {}


def test_single_sigma_objectives_get_an_unconditional_network(tmp_path):
  from ncsn_tf.models import registry as networks
  lab = experiments.Lab(_tiny(tmp_path))
  for loss in losses.SINGLE_SIGMA_LOSSES:
    config = lab.objective_config(loss)
    assert config.model.num_scales == 1 and config.model.sigma_begin == experiments.DSM_SIGMA
    assert type(networks.build_model(config, (2,))).__name__ == 'ScoreMLP'
  assert type(networks.build_model(lab.objective_config('anneal_ssm'), (2,))).__name__ == \
      'NoiseConditionalMLP'


def test_config_validation_of_the_lab_flags(tmp_path):
  base = _tiny(tmp_path)
  with pytest.raises(config_lib.ConfigError, match='--experiment'):
    config_lib.validate(base.replace(experiment='nope'))
  with pytest.raises(config_lib.ConfigError, match='--projection'):
    config_lib.validate(base.replace(train={'projection': 'sphere'}))
  with pytest.raises(config_lib.ConfigError, match='--loss'):
    config_lib.validate(base.replace(data={'dataset': 'shapes'}, model={'name': 'refinenet'},
                                     train={'loss': 'esm'}, mode='train'))
  for loss in config_lib.LOSSES:
    assert loss in losses.LOSSES
