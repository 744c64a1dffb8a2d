"""Evaluation metrics over reward-model scores (pure jnp).

Pairwise metrics and calibration (`pairwise`), per-group means (`grouping`),
and the scoring rules of the field's benchmarks: RewardBench v1 and 2
(`rewardbench`), best-of-N and one-vs-many ranks (`best_of_n`, RewardMATH),
RM-Bench's style matrix (`style_matrix`), agreement with human judges who may
call a tie (`agreement`, PandaLM), temperature scaling (`calibration`),
bias diagnostics (`diagnostics`), paired significance (`significance`: exact McNemar) and
overoptimisation over an enumerable
response set (`overoptimization`: the exact best-of-n law, the KL-regularised
optimum, Gao et al.'s fits; float64 numpy).

Imports only numpy, jax, jax.numpy and chex (through `rmjax.losses`).
"""

from rmjax.eval.agreement import human_agreement
from rmjax.eval.agreement import majority_label
from rmjax.eval.best_of_n import best_of_n_accuracy
from rmjax.eval.best_of_n import best_of_n_credit
from rmjax.eval.best_of_n import one_vs_many_accuracy
from rmjax.eval.best_of_n import reciprocal_rank
from rmjax.eval.calibration import apply_temperature
from rmjax.eval.calibration import fit_temperature
from rmjax.eval.calibration import TemperatureFit
from rmjax.eval.diagnostics import accuracy_by_bucket
from rmjax.eval.diagnostics import position_swap_flip_rate
from rmjax.eval.grouping import group_mean
from rmjax.eval.overoptimization import GaoFit
from rmjax.eval.overoptimization import best_of_n_distribution
from rmjax.eval.overoptimization import best_of_n_kl
from rmjax.eval.overoptimization import fit_gao_best_of_n
from rmjax.eval.overoptimization import fit_gao_rl
from rmjax.eval.overoptimization import kl_divergence
from rmjax.eval.overoptimization import max_tilted_kl
from rmjax.eval.overoptimization import tilted_betas_for_kl
from rmjax.eval.overoptimization import tilted_policy
from rmjax.eval.overoptimization import weighted_quantile
from rmjax.eval.overoptimization import win_values
from rmjax.eval.pairwise import bayes_optimal_pairwise_accuracy
from rmjax.eval.pairwise import expected_calibration_error
from rmjax.eval.pairwise import mean_reward_margin
from rmjax.eval.pairwise import pairwise_accuracy
from rmjax.eval.pairwise import pairwise_calibration_error
from rmjax.eval.pairwise import pairwise_correct
from rmjax.eval.pairwise import pairwise_reliability_bins
from rmjax.eval.pairwise import reliability_bins
from rmjax.eval.rewardbench import REWARDBENCH2_SUBSETS
from rmjax.eval.rewardbench import REWARDBENCH_EXAMPLE_COUNTS
from rmjax.eval.rewardbench import REWARDBENCH_SECTIONS
from rmjax.eval.rewardbench import rewardbench2_overall
from rmjax.eval.rewardbench import rewardbench2_ties_score
from rmjax.eval.rewardbench import rewardbench_overall
from rmjax.eval.rewardbench import rewardbench_section_scores
from rmjax.eval.significance import mcnemar_exact_p
from rmjax.eval.style_matrix import RMBENCH_DOMAINS
from rmjax.eval.style_matrix import rmbench_domain
from rmjax.eval.style_matrix import style_accuracy_matrix
from rmjax.eval.style_matrix import style_difficulty

__all__ = (
    "GaoFit",
    "best_of_n_distribution",
    "best_of_n_kl",
    "fit_gao_best_of_n",
    "fit_gao_rl",
    "kl_divergence",
    "max_tilted_kl",
    "tilted_betas_for_kl",
    "tilted_policy",
    "weighted_quantile",
    "win_values",
    "REWARDBENCH2_SUBSETS",
    "REWARDBENCH_EXAMPLE_COUNTS",
    "REWARDBENCH_SECTIONS",
    "RMBENCH_DOMAINS",
    "TemperatureFit",
    "accuracy_by_bucket",
    "apply_temperature",
    "bayes_optimal_pairwise_accuracy",
    "best_of_n_accuracy",
    "best_of_n_credit",
    "expected_calibration_error",
    "fit_temperature",
    "group_mean",
    "human_agreement",
    "majority_label",
    "mcnemar_exact_p",
    "mean_reward_margin",
    "one_vs_many_accuracy",
    "pairwise_accuracy",
    "pairwise_calibration_error",
    "pairwise_correct",
    "pairwise_reliability_bins",
    "position_swap_flip_rate",
    "reciprocal_rank",
    "reliability_bins",
    "rewardbench2_overall",
    "rewardbench2_ties_score",
    "rewardbench_overall",
    "rewardbench_section_scores",
    "rmbench_domain",
    "style_accuracy_matrix",
    "style_difficulty",
)
