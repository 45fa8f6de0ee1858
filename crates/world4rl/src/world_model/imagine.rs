//! Batched autoregressive imagination (World4RL §III-C, Algorithm 1 step 4; DIAMOND
//! `src/envs/world_model_env.py`).
//!
//! A [`RollingContext`] holds, per batch row, the last `L` frames, the actions taken at the first
//! `L − 1` of them and the padding mask. [`RollingContext::step`] appends the action chosen at the
//! last frame, samples the next frame with [`WorldModel::imagine_step_masked`], and rolls the
//! window by one. [`imagine`] replays an action sequence open-loop; [`imagine_with_policy`] asks a
//! policy for each action. Generated frames are quantised to 8 bits before they are fed back, as in
//! DIAMOND.

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

use super::WorldModel;
use crate::util::frames::bytes_to_model;

/// The sliding window of context frames and actions of a batch of imagined trajectories.
#[derive(Debug)]
pub struct RollingContext {
    /// `[B, L, 3, H, W]` in [-1, 1], zero where masked.
    frames: Tensor,
    /// `[B, L-1, A]`: the actions taken at context frames `0..L-1`.
    past_actions: Tensor,
    /// `[B, L]` bool.
    mask: Tensor,
}

impl RollingContext {
    /// From context frames `[B, L, 3, H, W]`, the actions taken at the first `L − 1` of them
    /// `[B, L−1, A]`, and a mask `[B, L]` (`None` = all real).
    pub fn new(frames: Tensor, past_actions: Tensor, mask: Option<Tensor>) -> Result<Self> {
        let fs = frames.size();
        ensure!(
            fs.len() == 5 && fs[2] == 3,
            "rolling context: frames must be [B, L, 3, H, W], got {fs:?}"
        );
        let (b, l) = (fs[0], fs[1]);
        let ps = past_actions.size();
        ensure!(
            ps.len() == 3 && ps[0] == b && ps[1] == l - 1,
            "rolling context: past actions must be [{b}, {}, A], got {ps:?}",
            l - 1
        );
        let mask = match mask {
            Some(m) => {
                ensure!(
                    m.size() == vec![b, l],
                    "rolling context: mask must be [{b}, {l}], got {:?}",
                    m.size()
                );
                m.to_kind(Kind::Bool).to_device(frames.device())
            }
            None => Tensor::ones([b, l], (Kind::Bool, frames.device())),
        };
        let frames = frames * mask.to_kind(Kind::Float).view([b, l, 1, 1, 1]);
        Ok(Self {
            frames,
            past_actions: past_actions.to_kind(Kind::Float).to_device(mask.device()),
            mask,
        })
    }

    /// The start of an episode: only the first frame `[B, 3, H, W]` is known; earlier positions are
    /// padding.
    pub fn from_first_frame(first: &Tensor, context: usize, action_dim: usize) -> Result<Self> {
        let s = first.size();
        ensure!(
            s.len() == 4 && s[1] == 3,
            "rolling context: first frame must be [B, 3, H, W], got {s:?}"
        );
        let (b, l) = (s[0], context as i64);
        let dev = first.device();
        let frames = Tensor::zeros([b, l, 3, s[2], s[3]], (Kind::Float, dev));
        frames.select(1, l - 1).copy_(first);
        let past = Tensor::zeros([b, l - 1, action_dim as i64], (Kind::Float, dev));
        let mask = Tensor::zeros([b, l], (Kind::Bool, dev));
        let _ = mask.select(1, l - 1).fill_(1);
        Self::new(frames, past, Some(mask))
    }

    /// From dataset episodes: row `i` is episode `starts[i].0` with its frame `starts[i].1` as the
    /// last context frame (earlier frames before the episode start are padding). Frames are resized
    /// to the model's size.
    pub fn from_episodes(wm: &WorldModel, starts: &[(&w4rl_data::Episode, usize)]) -> Result<Self> {
        ensure!(!starts.is_empty(), "rolling context: no episodes given");
        let l = wm.context_len();
        let a = wm.action_dim();
        let size = wm.image_size();
        let mut frames = Vec::with_capacity(starts.len());
        let mut past = Vec::with_capacity(starts.len() * (l - 1) * a);
        let mut mask = Vec::with_capacity(starts.len() * l);
        for &(ep, t) in starts {
            ensure!(
                t <= ep.meta.steps,
                "rolling context: frame {t} is beyond episode {} #{} ({} steps)",
                ep.meta.task,
                ep.meta.index,
                ep.meta.steps
            );
            ensure!(
                ep.meta.action_dim == a,
                "rolling context: episode has action dim {}, the model {a}",
                ep.meta.action_dim
            );
            let side = ep.meta.image_size;
            let mut bytes = vec![0u8; l * side * side * 3];
            for k in 0..l {
                // position k holds frame t - (l - 1) + k
                let real = (t + k).checked_sub(l - 1);
                mask.push(real.is_some());
                if let Some(f) = real {
                    bytes[k * side * side * 3..(k + 1) * side * side * 3]
                        .copy_from_slice(ep.frame(f));
                }
                if k + 1 < l {
                    match real {
                        Some(f) => past.extend_from_slice(ep.action(f)),
                        None => past.extend(std::iter::repeat_n(0.0, a)),
                    }
                }
            }
            frames.push(bytes_to_model(&bytes, l, side, size, wm.device())?);
        }
        let b = starts.len() as i64;
        let frames = Tensor::stack(&frames, 0);
        let past = Tensor::from_slice(&past)
            .view([b, l as i64 - 1, a as i64])
            .to_device(wm.device());
        let mask = Tensor::from_slice(&mask)
            .view([b, l as i64])
            .to_device(wm.device());
        Self::new(frames, past, Some(mask))
    }

    /// Batch size.
    pub fn batch(&self) -> i64 {
        self.frames.size()[0]
    }

    /// The context frames `[B, L, 3, H, W]`.
    pub fn frames(&self) -> &Tensor {
        &self.frames
    }

    /// The padding mask `[B, L]`.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// The most recent frame `[B, 3, H, W]` (what a policy observes).
    pub fn last_frame(&self) -> Tensor {
        self.frames.select(1, self.frames.size()[1] - 1)
    }

    /// The full context actions `[B, L, A]` once `action: [B, A]` is chosen at the last frame.
    pub fn actions_with(&self, action: &Tensor) -> Result<Tensor> {
        let b = self.batch();
        let a = self.past_actions.size()[2];
        ensure!(
            action.size() == vec![b, a],
            "rolling context: action must be [{b}, {a}], got {:?}",
            action.size()
        );
        Ok(Tensor::cat(
            &[
                &self.past_actions,
                &action
                    .to_kind(Kind::Float)
                    .to_device(self.device())
                    .unsqueeze(1),
            ],
            1,
        ))
    }

    /// Rolls the window: `action` was taken at the last frame and produced `next: [B, 3, H, W]`.
    pub fn push(&mut self, action: &Tensor, next: &Tensor) -> Result<()> {
        let acts = self.actions_with(action)?;
        let l = self.frames.size()[1];
        let b = self.batch();
        ensure!(
            next.size() == self.last_frame().size(),
            "rolling context: next frame must be {:?}, got {:?}",
            self.last_frame().size(),
            next.size()
        );
        self.frames = Tensor::cat(
            &[
                self.frames.narrow(1, 1, l - 1),
                next.to_device(self.device()).unsqueeze(1),
            ],
            1,
        );
        self.past_actions = acts.narrow(1, 1, l - 1);
        let ones = Tensor::ones([b, 1], (Kind::Bool, self.device()));
        self.mask = Tensor::cat(&[self.mask.narrow(1, 1, l - 1), ones], 1);
        Ok(())
    }

    /// Takes `action: [B, A]` at the last frame in the world model: samples the next frame, rolls the
    /// window and returns the frame `[B, 3, H, W]`.
    pub fn step(&mut self, wm: &WorldModel, action: &Tensor) -> Result<Tensor> {
        let acts = self.actions_with(action)?;
        let next = wm.imagine_step_masked(&self.frames, &acts, Some(&self.mask))?;
        self.push(action, &next)?;
        Ok(next)
    }

    /// Takes `action: [B, A]` at the last frame and samples the next frame `k` times (one batched
    /// world-model call over `k·B` rows, each with its own noise); rolls the window with the first
    /// sample and returns all of them, `[k, B, 3, H, W]` (sample 0 is the frame now in the window).
    /// How far the samples disagree is how unsure the world model is of that transition.
    pub fn step_samples(&mut self, wm: &WorldModel, action: &Tensor, k: usize) -> Result<Tensor> {
        ensure!(k >= 1, "rolling context: at least one sample per step");
        if k == 1 {
            return Ok(self.step(wm, action)?.unsqueeze(0));
        }
        let acts = self.actions_with(action)?;
        let k = k as i64;
        let tile = |t: &Tensor| {
            let mut reps = vec![1i64; t.dim()];
            reps[0] = k;
            t.repeat(reps.as_slice())
        };
        let all =
            wm.imagine_step_masked(&tile(&self.frames), &tile(&acts), Some(&tile(&self.mask)))?;
        let mut shape = all.size();
        shape[0] = self.batch();
        shape.insert(0, k);
        let all = all.view(shape.as_slice());
        self.push(action, &all.get(0))?;
        Ok(all)
    }

    /// Replaces the rows `rows` with the rows of `other` (e.g. to restart finished imagined episodes
    /// from fresh dataset contexts). `other` must have `rows.len()` rows.
    pub fn reset_rows(&mut self, rows: &[i64], other: &RollingContext) -> Result<()> {
        ensure!(
            other.batch() == rows.len() as i64,
            "rolling context: {} replacement rows for {} indices",
            other.batch(),
            rows.len()
        );
        ensure!(
            other.frames.size()[1..] == self.frames.size()[1..]
                && other.past_actions.size()[1..] == self.past_actions.size()[1..],
            "rolling context: replacement has another shape"
        );
        let idx = Tensor::from_slice(rows).to_device(self.device());
        let _ = self
            .frames
            .index_copy_(0, &idx, &other.frames.to_device(self.device()));
        let _ =
            self.past_actions
                .index_copy_(0, &idx, &other.past_actions.to_device(self.device()));
        let _ = self
            .mask
            .index_copy_(0, &idx, &other.mask.to_device(self.device()));
        Ok(())
    }

    fn device(&self) -> Device {
        self.frames.device()
    }
}

/// Open-loop imagination: replays `actions: [B, H, A]` from the context; returns the imagined frames
/// `[B, H, 3, S, S]` (the context advances by `H` steps).
pub fn imagine(wm: &WorldModel, ctx: &mut RollingContext, actions: &Tensor) -> Result<Tensor> {
    let s = actions.size();
    ensure!(
        s.len() == 3 && s[0] == ctx.batch(),
        "imagine: actions must be [{}, H, A], got {s:?}",
        ctx.batch()
    );
    let mut out = Vec::with_capacity(s[1] as usize);
    for h in 0..s[1] {
        out.push(ctx.step(wm, &actions.select(1, h))?);
    }
    ensure!(!out.is_empty(), "imagine: horizon must be at least 1");
    Ok(Tensor::stack(&out, 1))
}

/// Closed-loop imagination: at every step `policy(last_frame [B,3,S,S], &ctx)` returns the action
/// `[B, A]`. Returns (frames `[B, H, 3, S, S]`, actions `[B, H, A]`).
pub fn imagine_with_policy<P>(
    wm: &WorldModel,
    ctx: &mut RollingContext,
    horizon: usize,
    mut policy: P,
) -> Result<(Tensor, Tensor)>
where
    P: FnMut(&Tensor, &RollingContext) -> Result<Tensor>,
{
    ensure!(horizon >= 1, "imagine: horizon must be at least 1");
    let mut frames = Vec::with_capacity(horizon);
    let mut actions = Vec::with_capacity(horizon);
    for _ in 0..horizon {
        let a = policy(&ctx.last_frame(), ctx)?;
        frames.push(ctx.step(wm, &a)?);
        actions.push(a);
    }
    Ok((Tensor::stack(&frames, 1), Tensor::stack(&actions, 1)))
}

/// The first `steps` transitions of a recorded episode, real and imagined: the episode's frames, and
/// the world model's open-loop replay of its actions from its first frame. Two `[steps + 1, 3, H, W]`
/// tensors in [-1, 1] at the model's frame size, both starting with the first frame.
pub fn replay_episode(
    wm: &WorldModel,
    ep: &w4rl_data::Episode,
    steps: usize,
) -> Result<(Tensor, Tensor)> {
    ensure!(
        (1..=ep.meta.steps).contains(&steps),
        "an episode of {} steps cannot replay {steps}",
        ep.meta.steps
    );
    let mut ctx = RollingContext::from_episodes(wm, &[(ep, 0)])?;
    let first = ctx.last_frame();
    let a = wm.action_dim();
    let acts: Vec<f32> = (0..steps).flat_map(|t| ep.action(t).to_vec()).collect();
    let actions = Tensor::from_slice(&acts).view([1, steps as i64, a as i64]);
    let fake = imagine(wm, &mut ctx, &actions)?.squeeze_dim(0);
    let bytes: Vec<u8> = (1..=steps).flat_map(|t| ep.frame(t).to_vec()).collect();
    let real = bytes_to_model(
        &bytes,
        steps,
        ep.meta.image_size,
        wm.image_size(),
        wm.device(),
    )?;
    Ok((
        Tensor::cat(&[&first, &real], 0),
        Tensor::cat(&[&first, &fake], 0),
    ))
}

/// Checks that `columns` are equal-shaped frame sequences `[T, 3, S, S]` (errors prefixed with
/// `what`) and returns their shape and each one's pixels as u8 `[T, S, S, 3]`.
fn columns_as_u8(columns: &[&Tensor], what: &str) -> Result<(Vec<i64>, Vec<Vec<u8>>)> {
    ensure!(!columns.is_empty(), "{what}: no frames given");
    let s0 = columns[0].size();
    ensure!(
        s0.len() == 4 && s0[1] == 3,
        "{what}: columns must be [T, 3, S, S], got {s0:?}"
    );
    ensure!(
        columns.iter().all(|c| c.size() == s0),
        "{what}: columns differ in shape"
    );
    let u8s = columns
        .iter()
        .map(|c| {
            Vec::<u8>::try_from(
                crate::util::frames::model_to_hwc(&c.to_device(Device::Cpu)).flatten(0, -1),
            )
        })
        .collect::<Result<_, _>>()?;
    Ok((s0, u8s))
}

/// Writes an animated GIF of `columns` (each `[T, 3, S, S]` in [-1, 1], equal shapes) side by side,
/// separated by a 2-pixel white bar, every pixel enlarged `scale` times, `delay_cs` hundredths of a
/// second per frame, looping.
pub fn side_by_side_gif(
    path: &std::path::Path,
    columns: &[&Tensor],
    scale: usize,
    delay_cs: u16,
) -> Result<()> {
    use anyhow::Context;
    let (s0, u8s) = columns_as_u8(columns, "gif")?;
    let (t, h, w) = (s0[0] as usize, s0[2] as usize, s0[3] as usize);
    let scale = scale.max(1);
    let gap = 2;
    let (fw, fh) = (
        columns.len() * w * scale + (columns.len() - 1) * gap,
        h * scale,
    );
    ensure!(
        fw <= u16::MAX as usize && fh <= u16::MAX as usize,
        "gif: frame too large"
    );
    let mut bytes = Vec::new();
    let mut enc =
        gif::Encoder::new(&mut bytes, fw as u16, fh as u16, &[]).context("starting the GIF")?;
    enc.set_repeat(gif::Repeat::Infinite)
        .context("writing the GIF")?;
    for f in 0..t {
        let mut rgb = vec![255u8; fw * fh * 3];
        for (ci, col) in u8s.iter().enumerate() {
            let x0 = ci * (w * scale + gap);
            for y in 0..fh {
                for x in 0..w * scale {
                    let src = ((f * h + y / scale) * w + x / scale) * 3;
                    let dst = (y * fw + x0 + x) * 3;
                    rgb[dst..dst + 3].copy_from_slice(&col[src..src + 3]);
                }
            }
        }
        let mut frame = gif::Frame::from_rgb_speed(fw as u16, fh as u16, &rgb, 10);
        frame.delay = delay_cs;
        enc.write_frame(&frame).context("writing the GIF")?;
    }
    drop(enc);
    w4rl_data::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes named frame sequences (each `[T, 3, S, S]` in [-1, 1], equal shapes) to a safetensors file
/// as u8 arrays `[T, S, S, 3]`, with `meta` in its header (atomic): the pixels a GIF shows, for
/// measuring them (`dream --frames-out`).
pub fn write_frames(
    path: &std::path::Path,
    columns: &[(&str, &Tensor)],
    meta: &std::collections::HashMap<String, String>,
) -> Result<()> {
    use anyhow::Context;
    let tensors: Vec<&Tensor> = columns.iter().map(|(_, c)| *c).collect();
    let (s0, u8s) = columns_as_u8(&tensors, "frames")?;
    let shape = vec![s0[0] as usize, s0[2] as usize, s0[3] as usize, 3];
    let data: Vec<(&str, Vec<u8>)> = columns.iter().map(|(name, _)| *name).zip(u8s).collect();
    let views = data
        .iter()
        .map(|(name, d)| {
            safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::U8, shape.clone(), d)
                .map(|v| (*name, v))
                .map_err(|e| anyhow::anyhow!("frames '{name}': {e:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, &Some(meta.clone()))
        .map_err(|e| anyhow::anyhow!("serialising the frames: {e:?}"))?;
    // sorted header keys: the same frames and metadata always give the same bytes
    let bytes = w4rl_data::canonical_safetensors_header(bytes)?;
    w4rl_data::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world_model::WorldModelConfig;

    #[test]
    fn rolling_context_rolls_and_masks() {
        let opts = (Kind::Float, Device::Cpu);
        let first = Tensor::ones([2, 3, 4, 4], opts) * 0.5;
        let mut ctx = RollingContext::from_first_frame(&first, 4, 2).unwrap();
        assert_eq!(
            Vec::<bool>::try_from(ctx.mask().flatten(0, -1)).unwrap(),
            vec![false, false, false, true, false, false, false, true]
        );
        let a = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4]).view([2, 2]);
        let next = Tensor::ones([2, 3, 4, 4], opts) * -0.5;
        ctx.push(&a, &next).unwrap();
        assert_eq!(
            Vec::<bool>::try_from(ctx.mask().select(0, 0)).unwrap(),
            vec![false, false, true, true]
        );
        assert!(ctx.last_frame().equal(&next));
        assert!(ctx.frames().select(1, 2).equal(&first));
        // the pushed action is now the action of context position 2
        let full = ctx.actions_with(&Tensor::zeros([2, 2], opts)).unwrap();
        assert!(full.select(1, 2).equal(&a));
        assert!(ctx.push(&Tensor::zeros([3, 2], opts), &next).is_err());
    }

    #[test]
    fn imagine_shapes() {
        tch::manual_seed(0);
        let wm = WorldModel::new(WorldModelConfig::tiny(), 2, Device::Cpu).unwrap();
        let opts = (Kind::Float, Device::Cpu);
        let mut ctx =
            RollingContext::from_first_frame(&Tensor::zeros([3, 3, 16, 16], opts), 4, 2).unwrap();
        let out = imagine(&wm, &mut ctx, &Tensor::zeros([3, 5, 2], opts)).unwrap();
        assert_eq!(out.size(), vec![3, 5, 3, 16, 16]);
        let (f, a) = imagine_with_policy(&wm, &mut ctx, 2, |obs, _| {
            Ok(obs
                .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
                .unsqueeze(1)
                .repeat([1, 2]))
        })
        .unwrap();
        assert_eq!(f.size(), vec![3, 2, 3, 16, 16]);
        assert_eq!(a.size(), vec![3, 2, 2]);
    }

    #[test]
    fn frames_file_round_trips_the_pixels_and_refuses_mismatched_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frames.safetensors");
        let (n, side) = (3usize, 8usize);
        let real_bytes: Vec<u8> = (0..n * side * side * 3)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let fake_bytes: Vec<u8> = real_bytes.iter().map(|b| 255 - b).collect();
        let real = bytes_to_model(&real_bytes, n, side, side, Device::Cpu).unwrap();
        let fake = bytes_to_model(&fake_bytes, n, side, side, Device::Cpu).unwrap();
        let meta = std::collections::HashMap::from([("task".to_string(), "t".to_string())]);
        write_frames(&path, &[("real", &real), ("imagined", &fake)], &meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["task"], "t");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, want) in [("real", &real_bytes), ("imagined", &fake_bytes)] {
            let v = st.tensor(name).unwrap();
            assert_eq!(v.shape(), &[n, side, side, 3]);
            assert_eq!(v.data(), want.as_slice(), "{name} changed on the way");
        }
        let short = real.narrow(0, 0, 2);
        assert!(write_frames(&path, &[("real", &real), ("imagined", &short)], &meta).is_err());
        // the refused write left the earlier file as it was
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // the same frames and metadata give the same bytes, whatever order the metadata map holds
        let keys = ["task", "episode", "steps", "world_model", "seed", "policy"];
        let fill = |order: &mut dyn Iterator<Item = &&str>| {
            let mut m = std::collections::HashMap::new();
            for k in order {
                m.insert(k.to_string(), format!("value of {k}"));
            }
            m
        };
        let written = |m: &std::collections::HashMap<String, String>| {
            write_frames(&path, &[("real", &real), ("imagined", &fake)], m).unwrap();
            std::fs::read(&path).unwrap()
        };
        let first = written(&fill(&mut keys.iter()));
        for _ in 0..4 {
            assert_eq!(written(&fill(&mut keys.iter().rev())), first);
        }
    }
}
