//! LPIPS, FID and FVD backbones on random weights against a plain-PyTorch reference
//! (`scripts/metrics_reference.py`, run with the project's `.venv` Python, which the set-up installs
//! for libtorch anyway). Batch-norm statistics are randomised too, so every layer is exercised.

mod common;

use common::{python, root};
use std::process::Command;

use tch::{nn, Device, Kind, Tensor};
use world4rl::metrics::{fid::FidInception, fvd::I3d, lpips::Lpips};
use world4rl::util::checkpoint::{load_tensors, save_tensors, varstore_tensors};

/// Randomises every variable (weights ~ N(0, 1/fan_in); BN running mean/var/affine around 0/1).
fn randomise(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let r = if name.ends_with("running_var") {
                t.rand_like() + 0.5
            } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
                t.randn_like() * 0.1
            } else if name.ends_with("bn.weight") {
                t.rand_like() * 0.5 + 0.75
            } else if t.dim() >= 2 {
                let fan_in: i64 = t.size()[1..].iter().product();
                t.randn_like() / (fan_in as f64).sqrt()
            } else {
                t.randn_like() * 0.1
            };
            t.copy_(&r);
        }
    });
}

fn reference(vs: &nn::VarStore, inputs: &[(&str, &Tensor)], kind: &str) -> Tensor {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.safetensors");
    let i = dir.path().join("i.safetensors");
    let o = dir.path().join("o.safetensors");
    save_tensors(&w, &varstore_tensors(vs, ""), &serde_json::json!({})).unwrap();
    let ins: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|(k, t)| (k.to_string(), t.shallow_clone()))
        .collect();
    save_tensors(&i, &ins, &serde_json::json!({})).unwrap();
    let out = Command::new(python())
        .arg(root().join("scripts/metrics_reference.py"))
        .args([&w, &i, &o])
        .arg(kind)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (t, _) = load_tensors(&o).unwrap();
    t["out"].shallow_clone()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    ((&a - &b).abs().max() / b.abs().max().clamp_min(1e-12)).double_value(&[])
}

#[test]
fn lpips_matches_reference() {
    tch::set_num_threads(1);
    tch::manual_seed(1);
    let m = Lpips::new(Default::default(), Device::Cpu);
    randomise(m.var_store());
    let a = Tensor::rand([3, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let b = (&a + Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu)) * 0.2).clamp(-1.0, 1.0);
    let ours = m.distance(&a, &b).unwrap();
    let theirs = reference(m.var_store(), &[("a", &a), ("b", &b)], "lpips");
    assert!(rel_err(&ours, &theirs) < 1e-4, "lpips {ours} vs {theirs}");
    assert!(m.distance(&a, &a).unwrap().abs().max().double_value(&[]) < 1e-9);
}

#[test]
fn fid_inception_matches_reference() {
    tch::set_num_threads(1);
    tch::manual_seed(2);
    let m = FidInception::new(Device::Cpu);
    randomise(m.var_store());
    let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let ours = m.features(&x).unwrap();
    assert_eq!(ours.size(), vec![2, 2048]);
    let theirs = reference(m.var_store(), &[("x", &x)], "fid");
    assert!(
        rel_err(&ours, &theirs) < 1e-3,
        "fid features differ: rel err {}",
        rel_err(&ours, &theirs)
    );
}

#[test]
fn fvd_i3d_matches_reference() {
    tch::set_num_threads(1);
    tch::manual_seed(3);
    let m = I3d::new(Device::Cpu);
    randomise(m.var_store());
    let x = Tensor::rand([1, 6, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let ours = m.features(&x).unwrap();
    assert_eq!(ours.size(), vec![1, 400]);
    let theirs = reference(m.var_store(), &[("x", &x)], "fvd");
    assert!(
        rel_err(&ours, &theirs) < 1e-3,
        "i3d features differ: rel err {}",
        rel_err(&ours, &theirs)
    );
}
