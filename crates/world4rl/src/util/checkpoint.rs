//! Checkpoints: safetensors files with a JSON metadata entry, written atomically.
//!
//! A checkpoint holds named tensors (model weights, EMA weights, optimiser moments; by convention with
//! prefixes such as `model.`, `ema.`, `opt.`) and, in the safetensors header, `world4rl` = a JSON object
//! (step counter, config, metrics). They load in Python with `safetensors.torch.load_file`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{nn::VarStore, Kind, Tensor};

/// Writes tensors and metadata to `path` atomically (temporary file, fsync, rename): a write that
/// fails midway leaves the previous checkpoint at `path` loadable.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &serde_json::Value,
) -> Result<()> {
    let bytes = encode_tensors(tensors, meta)?;
    w4rl_data::write_atomic(path, &bytes)
        .with_context(|| format!("writing checkpoint {}", path.display()))?;
    Ok(())
}

/// The bytes of the safetensors file [`save_tensors`] writes.
pub fn encode_tensors(tensors: &[(String, Tensor)], meta: &serde_json::Value) -> Result<Vec<u8>> {
    let mut blobs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let (dtype, bytes) = match t.kind() {
            Kind::Float => (Dtype::F32, to_bytes::<f32>(&t)?),
            Kind::Double => (Dtype::F64, to_bytes::<f64>(&t)?),
            Kind::Int64 => (Dtype::I64, to_bytes::<i64>(&t)?),
            Kind::Uint8 => (Dtype::U8, to_bytes::<u8>(&t)?),
            Kind::Half | Kind::BFloat16 => (Dtype::F32, to_bytes::<f32>(&t.to_kind(Kind::Float))?),
            k => bail!("tensor '{name}' has unsupported kind {k:?} for a checkpoint"),
        };
        blobs.push((name.clone(), dtype, shape, bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = blobs
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(*d, s.clone(), b).map_err(|e| anyhow!("{e:?}"))?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut header = HashMap::new();
    header.insert("world4rl".to_string(), meta.to_string());
    safetensors::serialize(views, &Some(header))
        .map_err(|e| anyhow!("serialising checkpoint: {e:?}"))
}

fn to_bytes<T: tch::kind::Element + Copy>(t: &Tensor) -> Result<Vec<u8>> {
    let n = t.numel();
    let mut v = vec![T::ZERO; n];
    t.flatten(0, -1).copy_data(&mut v, n);
    let size = std::mem::size_of::<T>();
    // SAFETY: plain-old-data numeric slice reinterpreted as bytes (little-endian host).
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, n * size) };
    Ok(bytes.to_vec())
}

/// Reads every tensor (on the CPU) and the metadata of a checkpoint. A truncated or foreign file is an
/// error naming it.
pub fn load_tensors(path: &Path) -> Result<(BTreeMap<String, Tensor>, serde_json::Value)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow!(
            "{} is not a valid safetensors checkpoint: {e:?}",
            path.display()
        )
    })?;
    let (_, md) =
        SafeTensors::read_metadata(&bytes).map_err(|e| anyhow!("{}: {e:?}", path.display()))?;
    let meta = match md.metadata().as_ref().and_then(|m| m.get("world4rl")) {
        Some(s) => serde_json::from_str(s)
            .with_context(|| format!("{}: bad world4rl metadata", path.display()))?,
        None => serde_json::Value::Null,
    };
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::U8 => Kind::Uint8,
            d => bail!(
                "{}: tensor '{name}' has unsupported dtype {d:?}",
                path.display()
            ),
        };
        let t = Tensor::from_data_size(view.data(), &shape, kind);
        out.insert(name, t);
    }
    Ok((out, meta))
}

/// The variables of a VarStore under a name prefix (e.g. `model.`), for [`save_tensors`].
pub fn varstore_tensors(vs: &VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (format!("{prefix}{k}"), t))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copies tensors named `prefix + variable` into the VarStore's variables. Every variable must be
/// present with the same shape; missing or mis-shaped entries are an error naming them.
pub fn copy_into_varstore(
    tensors: &BTreeMap<String, Tensor>,
    vs: &mut VarStore,
    prefix: &str,
    origin: &Path,
) -> Result<()> {
    let vars = vs.variables();
    let mut missing = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            let key = format!("{prefix}{name}");
            match tensors.get(&key) {
                None => missing.push(key),
                Some(src) => {
                    if src.size() != var.size() {
                        bail!(
                            "{}: '{key}' has shape {:?}, the model expects {:?} (was the checkpoint made with another config?)",
                            origin.display(),
                            src.size(),
                            var.size()
                        );
                    }
                    var.copy_(&src.to_device(var.device()).to_kind(var.kind()));
                }
            }
        }
        Ok(())
    })?;
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: checkpoint lacks {} tensor(s) the model needs, e.g. {}",
            origin.display(),
            missing.len(),
            missing[..missing.len().min(3)].join(", ")
        );
    }
    Ok(())
}

/// Saves one VarStore (prefix `model.`) plus metadata.
pub fn save(path: &Path, vs: &VarStore, meta: &serde_json::Value) -> Result<()> {
    save_tensors(path, &varstore_tensors(vs, "model."), meta)
}

/// Loads a checkpoint written by [`save`] into `vs`; returns its metadata.
pub fn load(path: &Path, vs: &mut VarStore) -> Result<serde_json::Value> {
    let (tensors, meta) = load_tensors(path)?;
    copy_into_varstore(&tensors, vs, "model.", path)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module};

    #[test]
    fn a_checkpoint_write_failing_midway_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_state.safetensors");
        let first = vec![("w".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]))];
        save_tensors(&path, &first, &serde_json::json!({"step": 500})).unwrap();
        // the next checkpoint: half its bytes reach the disk, then the disk is full
        let second = vec![("w".to_string(), Tensor::from_slice(&[9.0f32, 9.0, 9.0]))];
        let bytes = encode_tensors(&second, &serde_json::json!({"step": 1000})).unwrap();
        let err = w4rl_data::write_atomic_with(&path, &bytes, |f, b| {
            std::io::Write::write_all(f, &b[..b.len() / 2])?;
            Err(std::io::Error::other(
                "no space left on device (test double)",
            ))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("train_state.safetensors") && err.contains("no space left"),
            "{err}"
        );
        let (t, meta) = load_tensors(&path).unwrap();
        assert_eq!(meta["step"], 500);
        assert!(t["w"].equal(&first[0].1));
        // and no temporary file is left behind
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("train_state.safetensors")]
        );
    }

    #[test]
    fn round_trip_is_exact_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let lin = nn::linear(vs.root() / "lin", 5, 3, Default::default());
        save(&path, &vs, &serde_json::json!({"step": 7})).unwrap();

        let mut vs2 = nn::VarStore::new(tch::Device::Cpu);
        let lin2 = nn::linear(vs2.root() / "lin", 5, 3, Default::default());
        let x = Tensor::randn([2, 5], (Kind::Float, tch::Device::Cpu));
        assert!(
            lin.forward(&x)
                .not_equal_tensor(&lin2.forward(&x))
                .any()
                .int64_value(&[])
                == 1
        );
        let meta = load(&path, &mut vs2).unwrap();
        assert_eq!(meta["step"], 7);
        assert!(lin.forward(&x).equal(&lin2.forward(&x)));

        // wrong shapes are refused by name
        let mut vs3 = nn::VarStore::new(tch::Device::Cpu);
        let _ = nn::linear(vs3.root() / "lin", 4, 3, Default::default());
        let err = load(&path, &mut vs3).unwrap_err().to_string();
        assert!(err.contains("model.lin.weight"), "{err}");

        // truncated files are refused by name
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = load(&path, &mut vs2).unwrap_err().to_string();
        assert!(err.contains("ck.safetensors"), "{err}");
    }
}
