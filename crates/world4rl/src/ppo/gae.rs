//! Generalised advantage estimation and the critic's explained variance.

/// Generalised advantage estimation over a `[T, N]` rollout stored row-major (`index = t * n + i`).
///
/// `dones[t*n+i]` says that the episode of env `i` ended with transition `t` (no bootstrapping across
/// it); `last_values[i]` is V of the observation after the last transition. Returns
/// `(advantages, returns = advantages + values)`.
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    dones: &[bool],
    last_values: &[f32],
    n: usize,
    gamma: f32,
    lambda: f32,
) -> (Vec<f32>, Vec<f32>) {
    let t_len = rewards.len().checked_div(n).unwrap_or(0);
    let mut adv = vec![0.0f32; rewards.len()];
    for (i, &last) in last_values.iter().enumerate().take(n) {
        let mut next_adv = 0.0f32;
        let mut next_value = last;
        for t in (0..t_len).rev() {
            let k = t * n + i;
            let nonterminal = if dones[k] { 0.0 } else { 1.0 };
            let delta = rewards[k] + gamma * next_value * nonterminal - values[k];
            next_adv = delta + gamma * lambda * nonterminal * next_adv;
            adv[k] = next_adv;
            next_value = values[k];
        }
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// 1 - Var(target - pred) / Var(target) (NaN when the target is constant).
pub(crate) fn explained_variance(pred: &[f32], target: &[f32]) -> f64 {
    let n = target.len().max(1) as f64;
    let mean = |v: &mut dyn Iterator<Item = f64>| v.sum::<f64>() / n;
    let mt = mean(&mut target.iter().map(|&x| x as f64));
    let var_t = mean(&mut target.iter().map(|&x| (x as f64 - mt).powi(2)));
    let diff: Vec<f64> = target
        .iter()
        .zip(pred)
        .map(|(&t, &p)| (t - p) as f64)
        .collect();
    let md = mean(&mut diff.iter().copied());
    let var_d = mean(&mut diff.iter().map(|&d| (d - md).powi(2)));
    if var_t <= 0.0 {
        f64::NAN
    } else {
        1.0 - var_d / var_t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_matches_hand_computation() {
        // 2 envs, 3 steps; env 0 ends at t = 1, env 1 never ends.
        let n = 2;
        let r = [1.0, 0.0, 0.0, 0.0, 2.0, 1.0];
        let v = [0.5, 0.1, 0.4, 0.2, 0.3, 0.6];
        let d = [false, false, true, false, false, false];
        let last = [0.7, 0.8];
        let (g, l) = (0.9f32, 0.8f32);
        let (adv, ret) = gae(&r, &v, &d, &last, n, g, l);
        // env 0: t=2: δ = 2 + .9*.7 - .3 = 2.33 ; A2 = 2.33
        //        t=1: done -> δ = 0 - .4 = -.4 ; A1 = -.4
        //        t=0: δ = 1 + .9*.4 - .5 = .86 ; A0 = .86 + .72*(-.4) = .572
        // env 1: t=2: δ = 1 + .9*.8 - .6 = 1.12 ; A2 = 1.12
        //        t=1: δ = 0 + .9*.6 - .2 = .34 ; A1 = .34 + .72*1.12 = 1.1464
        //        t=0: δ = 0 + .9*.2 - .1 = .08 ; A0 = .08 + .72*1.1464 = .905408
        let want = [0.572, 0.905408, -0.4, 1.1464, 2.33, 1.12];
        for (a, w) in adv.iter().zip(want) {
            assert!((a - w).abs() < 1e-5, "{adv:?}");
        }
        for k in 0..6 {
            assert!((ret[k] - (adv[k] + v[k])).abs() < 1e-6);
        }
        // λ = 0 gives the TD(0) target of the paper's Eq. 9
        let (adv0, _) = gae(&r, &v, &d, &last, n, g, 0.0);
        assert!((adv0[0] - 0.86).abs() < 1e-6);
    }

    #[test]
    fn explained_variance_of_perfect_prediction_is_one() {
        assert!((explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!(explained_variance(&[0.0; 3], &[1.0; 3]).is_nan());
    }
}
