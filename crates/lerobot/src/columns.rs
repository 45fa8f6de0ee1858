//! Reading and writing the parquet files of a LeRobot dataset, and turning arrow columns into plain
//! vectors (vectors may be stored as fixed-size lists, lists or, for one value, as scalars).

use std::fs::File;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Reads the named top-level columns of a parquet file (all columns when `columns` is empty) into one
/// record batch. Missing columns are an error naming the file.
pub fn read_columns(path: &Path, columns: &[&str]) -> Result<RecordBatch> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| {
        format!(
            "{} is not a readable parquet file (truncated or corrupt?)",
            path.display()
        )
    })?;
    let schema = builder.schema().clone();
    let mask = if columns.is_empty() {
        ProjectionMask::all()
    } else {
        let mut roots = Vec::with_capacity(columns.len());
        for c in columns {
            let i = schema.index_of(c).map_err(|_| {
                anyhow::anyhow!(
                    "{} has no column '{c}' (its columns: {})",
                    path.display(),
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            roots.push(i);
        }
        ProjectionMask::roots(builder.parquet_schema(), roots)
    };
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let out_schema = reader.schema();
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.with_context(|| {
            format!(
                "{} is corrupt or truncated: a row group could not be decoded",
                path.display()
            )
        })?);
    }
    arrow_select::concat::concat_batches(&out_schema, &batches)
        .with_context(|| format!("cannot assemble the columns of {}", path.display()))
}

/// The column `name` of `batch`, or an error naming the file.
pub fn column<'a>(batch: &'a RecordBatch, name: &str, file: &Path) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .with_context(|| format!("{} has no column '{name}'", file.display()))
}

/// A numeric column as `rows × width` f32 values. Accepts fixed-size lists, lists and large lists of
/// float32/float64/int, and, for `width == 1`, scalar columns.
pub fn f32_rows(col: &ArrayRef, width: usize, what: &str) -> Result<Vec<f32>> {
    ensure!(
        col.null_count() == 0,
        "{what} has {} missing (null) values",
        col.null_count()
    );
    let n = col.len();
    let (values, stride): (ArrayRef, Option<usize>) = match col.data_type() {
        DataType::FixedSizeList(_, w) => {
            let w = *w as usize;
            ensure!(
                w == width,
                "{what} has {w} values per frame, expected {width}"
            );
            // the child of a sliced fixed-size list starts at the slice's offset
            let l = col.as_fixed_size_list();
            (l.values().slice(l.offset() * w, n * w), Some(w))
        }
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            check_list_widths(l.value_offsets().iter().map(|&o| o as usize), width, what)?;
            (
                l.values()
                    .slice(l.value_offsets()[0] as usize, n * width)
                    .clone(),
                Some(width),
            )
        }
        DataType::LargeList(_) => {
            let l = col.as_list::<i64>();
            check_list_widths(l.value_offsets().iter().map(|&o| o as usize), width, what)?;
            (
                l.values()
                    .slice(l.value_offsets()[0] as usize, n * width)
                    .clone(),
                Some(width),
            )
        }
        _ => (col.clone(), None),
    };
    let got = stride.unwrap_or(1);
    ensure!(
        got == width,
        "{what} has {got} values per frame, expected {width}"
    );
    ensure!(
        values.null_count() == 0,
        "{what} has missing (null) values inside its vectors"
    );
    let out: Vec<f32> = match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
        DataType::Float64 => values
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        DataType::Int64 => values
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        DataType::Int32 => values
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        DataType::Boolean => values
            .as_boolean()
            .iter()
            .map(|v| v.unwrap_or(false) as u8 as f32)
            .collect(),
        t => bail!("{what} holds {t} values; expected numbers"),
    };
    ensure!(
        out.len() == n * width,
        "{what} has {} values for {n} rows of {width}",
        out.len()
    );
    Ok(out)
}

fn check_list_widths(offsets: impl Iterator<Item = usize>, width: usize, what: &str) -> Result<()> {
    let mut prev = None;
    for (row, o) in offsets.enumerate() {
        if let Some(p) = prev {
            let w = o - p;
            ensure!(
                w == width,
                "{what}: row {} has {w} values, expected {width}",
                row - 1
            );
        }
        prev = Some(o);
    }
    Ok(())
}

/// An integer column (int64 or int32, or a one-element list of them) as i64 values.
pub fn i64_rows(col: &ArrayRef, what: &str) -> Result<Vec<i64>> {
    ensure!(
        col.null_count() == 0,
        "{what} has {} missing (null) values",
        col.null_count()
    );
    Ok(match col.data_type() {
        DataType::Int64 => col.as_primitive::<Int64Type>().values().to_vec(),
        DataType::Int32 => col
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|&v| v as i64)
            .collect(),
        DataType::FixedSizeList(..) | DataType::List(_) | DataType::LargeList(_) => {
            f32_rows(col, 1, what)?
                .into_iter()
                .map(|v| v as i64)
                .collect()
        }
        t => bail!("{what} holds {t} values; expected integers"),
    })
}

/// A flag column (bool, or numbers where non-zero is true; scalar or one-element lists).
pub fn bool_rows(col: &ArrayRef, what: &str) -> Result<Vec<bool>> {
    if let DataType::Boolean = col.data_type() {
        ensure!(
            col.null_count() == 0,
            "{what} has {} missing (null) values",
            col.null_count()
        );
        return Ok(col
            .as_boolean()
            .iter()
            .map(|v| v.unwrap_or(false))
            .collect());
    }
    Ok(f32_rows(col, 1, what)?
        .into_iter()
        .map(|v| v != 0.0)
        .collect())
}

/// An image column (Hugging Face `Image`: a struct of `bytes` and `path`) as the encoded bytes of
/// each row.
pub fn image_bytes(col: &ArrayRef, what: &str) -> Result<Vec<Vec<u8>>> {
    let DataType::Struct(fields) = col.data_type() else {
        bail!(
            "{what} is stored as {}; expected a struct of image bytes and path",
            col.data_type()
        );
    };
    ensure!(
        fields.iter().any(|f| f.name() == "bytes"),
        "{what} has no 'bytes' field: images stored only as paths are not supported"
    );
    let s = col.as_struct();
    let bytes = s.column_by_name("bytes").expect("checked above");
    let mut out = Vec::with_capacity(col.len());
    match bytes.data_type() {
        DataType::Binary => {
            let b = bytes.as_binary::<i32>();
            for i in 0..b.len() {
                ensure!(
                    !b.is_null(i) && !col.is_null(i),
                    "{what}: row {i} holds no image bytes (images stored only as paths are not supported)"
                );
                out.push(b.value(i).to_vec());
            }
        }
        DataType::LargeBinary => {
            let b = bytes.as_binary::<i64>();
            for i in 0..b.len() {
                ensure!(
                    !b.is_null(i) && !col.is_null(i),
                    "{what}: row {i} holds no image bytes (images stored only as paths are not supported)"
                );
                out.push(b.value(i).to_vec());
            }
        }
        t => bail!("{what}: image bytes stored as {t}; expected binary"),
    }
    Ok(out)
}

/// A string column (utf8 or large utf8).
pub fn string_rows(col: &ArrayRef, what: &str) -> Result<Vec<String>> {
    ensure!(col.null_count() == 0, "{what} has missing (null) values");
    Ok(match col.data_type() {
        DataType::Utf8 => col
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect(),
        DataType::LargeUtf8 => col
            .as_string::<i64>()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect(),
        DataType::Utf8View => col
            .as_string_view()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect(),
        t => bail!("{what} holds {t} values; expected strings"),
    })
}

/// Writes record batches into one parquet file (snappy), atomically: a temporary file in the same
/// folder, renamed over `path` when complete (the schema carries any key-value metadata).
pub fn write_parquet(
    path: &Path,
    schema: arrow_schema::SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = tmp_path(path);
    let result = (|| -> Result<()> {
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut w = ArrowWriter::try_new(file, schema, Some(props))?;
        for b in batches {
            w.write(b)?;
        }
        w.close()?;
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("writing {}", path.display())))
        }
    }
}

/// The temporary name a file is written under before its rename.
pub fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
