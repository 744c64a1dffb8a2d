"""Direct preference losses: DPO and its family, on sequence log-probabilities.

Inputs are sequence log-probabilities, [B] (or [B, K] for lists), usually
`sequence_log_probs(token_log_probs(...), mask)` of the responses under the
policy and under a frozen reference: summed over tokens for DPO, IPO, KTO,
SELM, DNO and LiPO; averaged over tokens (aggregation="mean") for SimPO, ORPO
and PRO. Notation, for a pair (chosen y_w, rejected y_l):

  h = (logp(y_w) - logp_ref(y_w)) - (logp(y_l) - logp_ref(y_l))

and beta * (logp - logp_ref) is the "implicit reward" of a response
(`implicit_rewards`).

Conventions shared with the reward-model losses:
  * computation in float32 (bfloat16 inputs are upcast), stable log-sigmoid /
    softplus; no NaN or inf for log-ratios h up to +-50 nor for
    log-probabilities down to -1e4;
  * an optional validity `mask` ([B], or [B, K] for lists); the inputs of
    masked entries are replaced by 0 *before* anything is computed, so padding
    with junk (even NaN or inf) changes neither the value nor the gradient;
  * `reduction` in {"mean", "sum", "none"} through `reduce_loss` ("mean" is
    over valid entries), and optional per-pair `weights`.

As in `listwise`, each public function checks what only Python can check
(hyperparameters, option names) and hands the rest to a private helper;
nothing is jitted inside (callers jit, see `rmjax.losses`).

The losses live in one module per input shape:
  * `paired`: a chosen and a rejected response per prompt (DPO, cDPO, robust
    DPO, IPO, hinge/SLiC, SimPO, ORPO, SELM, DNO, EXO, NCA, SPPO-hard,
    APO-zero, APO-down, DiscoPOP, f-DPO; `implicit_rewards`);
  * `bco`: BCO's pair loss and its reward shift kept as explicit state
    (`bco_reward_shift`, an optax-shaped `(init, update)` pair);
  * `distributional`: AOT, paired and unpaired, whose terms couple the batch
    by sorting it;
  * `weighting`: from token-level inputs to what the paired losses take:
    WPO's pair weights (`wpo_weights`) and LD-DPO's sequence log-probs
    (`ld_dpo_log_probs`);
  * `unpaired`: responses labelled desirable or undesirable (KTO);
  * `listwise`: K ranked or scored responses per prompt (LiPO-lambda, PRO);
  * `multihead`: one action head per objective (MAH-DPO, `mix_head_logits`);
and `_shared` holds their common helpers. `registry` names the paired losses
as TRL's DPOConfig.loss_type does (`PAIRED_LOSSES`, `get_paired_loss`), so
that a config can choose one.
"""

from rmjax.losses.direct_preference.bco import bco_pair_loss
from rmjax.losses.direct_preference.bco import bco_reward_shift
from rmjax.losses.direct_preference.bco import BcoShiftState
from rmjax.losses.direct_preference.distributional import aot_loss
from rmjax.losses.direct_preference.distributional import aot_unpaired_loss
from rmjax.losses.direct_preference.listwise import lipo_lambda_loss
from rmjax.losses.direct_preference.listwise import pro_loss
from rmjax.losses.direct_preference.multihead import mah_dpo_loss
from rmjax.losses.direct_preference.multihead import mix_head_logits
from rmjax.losses.direct_preference.paired import apo_down_loss
from rmjax.losses.direct_preference.paired import apo_zero_loss
from rmjax.losses.direct_preference.paired import discopop_loss
from rmjax.losses.direct_preference.paired import dno_loss
from rmjax.losses.direct_preference.paired import dpo_loss
from rmjax.losses.direct_preference.paired import exo_pair_loss
from rmjax.losses.direct_preference.paired import F_DIVERGENCES
from rmjax.losses.direct_preference.paired import f_divergence_dpo_loss
from rmjax.losses.direct_preference.paired import hinge_loss
from rmjax.losses.direct_preference.paired import implicit_rewards
from rmjax.losses.direct_preference.paired import ipo_loss
from rmjax.losses.direct_preference.paired import nca_pair_loss
from rmjax.losses.direct_preference.paired import orpo_loss
from rmjax.losses.direct_preference.paired import robust_dpo_loss
from rmjax.losses.direct_preference.paired import selm_loss
from rmjax.losses.direct_preference.paired import simpo_loss
from rmjax.losses.direct_preference.paired import sppo_hard_loss
from rmjax.losses.direct_preference.registry import get_paired_loss
from rmjax.losses.direct_preference.registry import PAIRED_LOSSES
from rmjax.losses.direct_preference.unpaired import kto_loss
from rmjax.losses.direct_preference.weighting import ld_dpo_log_probs
from rmjax.losses.direct_preference.weighting import wpo_weights
