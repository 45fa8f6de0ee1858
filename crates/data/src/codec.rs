//! One episode file: a safetensors file with the episode's arrays, its metadata and a CRC-32 of each
//! array, written canonically and read back with every check (see [`crate::store`] for the layout).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::episode::{Episode, EpisodeMeta, SCHEMA_VERSION};
use crate::DataError;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Serialises an episode to the bytes of its safetensors file.
pub fn encode_episode(ep: &Episode) -> Result<Vec<u8>, DataError> {
    let m = &ep.meta;
    let t = m.steps;
    let h = m.image_size;
    let actions = f32_bytes(&ep.actions);
    let rewards = f32_bytes(&ep.rewards);
    let states = f32_bytes(&ep.states);
    let mut arrays: Vec<(&str, Dtype, Vec<usize>, &[u8])> = vec![
        ("frames", Dtype::U8, vec![t + 1, h, h, 3], &ep.frames),
        ("actions", Dtype::F32, vec![t, m.action_dim], &actions),
        ("rewards", Dtype::F32, vec![t], &rewards),
        ("success", Dtype::U8, vec![t + 1], &ep.success),
    ];
    if m.state_dim > 0 {
        arrays.push(("states", Dtype::F32, vec![t + 1, m.state_dim], &states));
    }
    let mut crc = serde_json::Map::new();
    let mut views = Vec::new();
    for (name, dtype, shape, data) in arrays {
        crc.insert(name.into(), crc32fast::hash(data).into());
        let view = TensorView::new(dtype, shape, data)
            .map_err(|e| DataError::Invalid(format!("array '{name}': {e:?}")))?;
        views.push((name, view));
    }
    let mut header = HashMap::new();
    header.insert(
        "world4rl".to_string(),
        serde_json::to_string(m).expect("meta serialises"),
    );
    header.insert(
        "crc32".to_string(),
        serde_json::Value::Object(crc).to_string(),
    );
    let bytes = safetensors::serialize(views, &Some(header))
        .map_err(|e| DataError::Invalid(format!("serialising episode: {e:?}")))?;
    canonical_safetensors_header(bytes)
}

/// Rewrites the JSON header of the safetensors file `bytes` with its keys (and those of
/// `__metadata__`) sorted, so that the same content always encodes to the same bytes:
/// `safetensors::serialize` takes the metadata as a `HashMap`, whose iteration order changes from one
/// map to the next. The data section and its offsets are untouched; the header is padded with spaces
/// to a multiple of 8 bytes, as the format asks.
pub fn canonical_safetensors_header(bytes: Vec<u8>) -> Result<Vec<u8>, DataError> {
    let bad = |why: &str| DataError::Invalid(format!("serialising a safetensors file: {why}"));
    if bytes.len() < 8 {
        return Err(bad("short buffer"));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| bad("short buffer"))?) as usize;
    if bytes.len() - 8 < n {
        return Err(bad("the header runs past the end"));
    }
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(&e.to_string()))?;
    let mut text = String::from("{");
    for (i, (key, value)) in header.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let value = match value {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
                serde_json::to_string(&sorted)
            }
            other => serde_json::to_string(other),
        }
        .map_err(|e| bad(&e.to_string()))?;
        text.push_str(&serde_json::to_string(key).map_err(|e| bad(&e.to_string()))?);
        text.push(':');
        text.push_str(&value);
    }
    text.push('}');
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn map_file(path: &Path) -> Result<memmap2::Mmap, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    // SAFETY: the file is opened read-only; episode files are never modified in place (writes go
    // through a temporary file and a rename), so the mapping stays valid.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::io(path, e))
}

/// Reads only the metadata of an episode file (still checks the header against the file size).
pub fn read_episode_meta(path: &Path) -> Result<EpisodeMeta, DataError> {
    let map = map_file(path)?;
    let (_, md) = SafeTensors::read_metadata(&map).map_err(|e| corrupt(path, format!("{e:?}")))?;
    meta_from_header(path, md.metadata())
}

fn meta_from_header(
    path: &Path,
    header: &Option<HashMap<String, String>>,
) -> Result<EpisodeMeta, DataError> {
    let text = header
        .as_ref()
        .and_then(|h| h.get("world4rl"))
        .ok_or_else(|| corrupt(path, "no world4rl metadata in the header"))?;
    let meta: EpisodeMeta =
        serde_json::from_str(text).map_err(|e| corrupt(path, format!("metadata: {e}")))?;
    if meta.schema_version != SCHEMA_VERSION {
        return Err(corrupt(
            path,
            format!(
                "schema version {} is not supported (this build reads {SCHEMA_VERSION})",
                meta.schema_version
            ),
        ));
    }
    Ok(meta)
}

/// Reads and fully checks one episode file: dtypes and shapes against the metadata, checksums,
/// value ranges. Any problem is an error naming the file.
pub fn read_episode(path: &Path) -> Result<Episode, DataError> {
    decode_episode(path, &map_file(path)?)
}

/// [`read_episode`] on the bytes of the file at `path` already in memory (`path` names it in
/// errors).
pub fn decode_episode(path: &Path, bytes: &[u8]) -> Result<Episode, DataError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(path, format!("{e:?}")))?;
    let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(path, format!("{e:?}")))?;
    let header = md.metadata();
    let meta = meta_from_header(path, header)?;
    let crc: serde_json::Map<String, serde_json::Value> = header
        .as_ref()
        .and_then(|h| h.get("crc32"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| corrupt(path, "no crc32 checksums in the header"))?;
    let t = meta.steps;
    let h = meta.image_size;
    let get = |name: &str, dtype: Dtype, shape: Vec<usize>| -> Result<Vec<u8>, DataError> {
        let view = st
            .tensor(name)
            .map_err(|_| corrupt(path, format!("array '{name}' is missing")))?;
        if view.dtype() != dtype {
            return Err(corrupt(
                path,
                format!(
                    "array '{name}' has dtype {:?}, expected {dtype:?}",
                    view.dtype()
                ),
            ));
        }
        if view.shape() != shape.as_slice() {
            return Err(corrupt(
                path,
                format!(
                    "array '{name}' has shape {:?}, metadata implies {shape:?}",
                    view.shape()
                ),
            ));
        }
        let want = crc
            .get(name)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(path, format!("no checksum for '{name}'")))?;
        if crc32fast::hash(view.data()) as u64 != want {
            return Err(corrupt(
                path,
                format!("array '{name}' fails its CRC-32 check"),
            ));
        }
        Ok(view.data().to_vec())
    };
    let frames = get("frames", Dtype::U8, vec![t + 1, h, h, 3])?;
    let actions = bytes_f32(&get("actions", Dtype::F32, vec![t, meta.action_dim])?);
    let rewards = bytes_f32(&get("rewards", Dtype::F32, vec![t])?);
    let success = get("success", Dtype::U8, vec![t + 1])?;
    let states = if meta.state_dim > 0 {
        bytes_f32(&get("states", Dtype::F32, vec![t + 1, meta.state_dim])?)
    } else {
        Vec::new()
    };
    let ep = Episode {
        meta,
        frames,
        actions,
        rewards,
        success,
        states,
    };
    ep.validate().map_err(|e| corrupt(path, e.to_string()))?;
    Ok(ep)
}
