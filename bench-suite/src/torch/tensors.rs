//! Host tensors to and from safetensors files, the exchange format with the PyTorch runner.
//!
//! Tensors are keyed `SET/NAME`. Inputs identical across sets (weights, usually) are stored once
//! and every set points at the first copy, so a pool of input sets costs one copy of the weights.

use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use verifier::dtype::DType;
use verifier::inputs::HostTensor;

#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: tensor `{key}`: {message}")]
    Tensor {
        path: PathBuf,
        key: String,
        message: String,
    },
}

pub fn to_safetensors(d: DType) -> Dtype {
    match d {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::BF16,
        DType::E4m3 => Dtype::F8_E4M3,
        DType::E5m2 => Dtype::F8_E5M2,
        DType::I8 => Dtype::I8,
        DType::I16 => Dtype::I16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
        DType::U16 => Dtype::U16,
        DType::U32 => Dtype::U32,
        DType::U64 => Dtype::U64,
        DType::Bool => Dtype::BOOL,
    }
}

pub fn from_safetensors(d: Dtype) -> Option<DType> {
    DType::ALL
        .into_iter()
        .find(|ours| to_safetensors(*ours) == d)
}

pub fn key(set: usize, name: &str) -> String {
    format!("{set}/{name}")
}

struct HostView<'a> {
    tensor: &'a HostTensor,
    shape: Vec<usize>,
}

impl View for HostView<'_> {
    fn dtype(&self) -> Dtype {
        to_safetensors(self.tensor.dtype)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.tensor.bytes)
    }
    fn data_len(&self) -> usize {
        self.tensor.bytes.len()
    }
}

/// Writes `sets[k][i]` (input `names[i]` of set `k`) to `path` and returns, per set, the key of
/// each input's tensor in the file (a repeated tensor points at its first copy).
pub fn write_input_sets(
    path: &Path,
    names: &[String],
    sets: &[Vec<HostTensor>],
) -> Result<Vec<Vec<String>>, TensorFileError> {
    let file_err = |message: String| TensorFileError::File {
        path: path.to_path_buf(),
        message,
    };
    let mut views: Vec<(String, HostView)> = Vec::new();
    let mut keys = Vec::with_capacity(sets.len());
    for (k, set) in sets.iter().enumerate() {
        if set.len() != names.len() {
            return Err(file_err(format!(
                "input set {k} holds {} tensors for {} inputs",
                set.len(),
                names.len()
            )));
        }
        let mut set_keys = Vec::with_capacity(names.len());
        for (i, t) in set.iter().enumerate() {
            let expected = t
                .dims
                .iter()
                .try_fold(t.dtype.size_bytes() as u64, |a, &d| a.checked_mul(d));
            if expected != Some(t.bytes.len() as u64) {
                return Err(TensorFileError::Tensor {
                    path: path.to_path_buf(),
                    key: key(k, &names[i]),
                    message: format!(
                        "{} bytes do not hold a {}{:?} tensor",
                        t.bytes.len(),
                        t.dtype,
                        t.dims
                    ),
                });
            }
            let same = (0..k).find(|&j| sets[j].get(i) == Some(t));
            match same {
                Some(j) => set_keys.push(key(j, &names[i])),
                None => {
                    let shape = t
                        .dims
                        .iter()
                        .map(|&d| usize::try_from(d))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| file_err(format!("dimension of `{}` too large", names[i])))?;
                    let kk = key(k, &names[i]);
                    views.push((kk.clone(), HostView { tensor: t, shape }));
                    set_keys.push(kk);
                }
            }
        }
        keys.push(set_keys);
    }
    safetensors::serialize_to_file(views, None, path).map_err(|e| file_err(e.to_string()))?;
    Ok(keys)
}

/// Reads the tensors named by `wanted` (key, expected dtype, expected dims) from `path`.
pub fn read_tensors(
    path: &Path,
    wanted: &[(String, DType, Vec<u64>)],
) -> Result<Vec<HostTensor>, TensorFileError> {
    let bytes = std::fs::read(path).map_err(|e| TensorFileError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| TensorFileError::File {
        path: path.to_path_buf(),
        message: format!("not a valid safetensors file: {e}"),
    })?;
    wanted
        .iter()
        .map(|(k, dtype, dims)| {
            let err = |message: String| TensorFileError::Tensor {
                path: path.to_path_buf(),
                key: k.clone(),
                message,
            };
            let view = file
                .tensor(k)
                .map_err(|_| err("missing from the file".to_string()))?;
            let got = from_safetensors(view.dtype());
            if got != Some(*dtype) {
                return Err(err(format!("dtype {:?}, expected {dtype}", view.dtype())));
            }
            let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
            if &shape != dims {
                return Err(err(format!("shape {shape:?}, expected {dims:?}")));
            }
            Ok(HostTensor {
                dtype: *dtype,
                dims: dims.clone(),
                bytes: view.data().to_vec(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(dtype: DType, dims: &[u64], fill: u8) -> HostTensor {
        let n: u64 = dims.iter().product::<u64>() * dtype.size_bytes() as u64;
        HostTensor {
            dtype,
            dims: dims.to_vec(),
            bytes: (0..n).map(|i| fill.wrapping_add(i as u8)).collect(),
        }
    }

    #[test]
    fn every_dtype_maps_both_ways() {
        for d in DType::ALL {
            assert_eq!(from_safetensors(to_safetensors(d)), Some(d));
        }
        assert_eq!(from_safetensors(Dtype::C64), None);
    }

    #[test]
    fn sets_share_identical_tensors_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.safetensors");
        let names = vec!["x".to_string(), "w".to_string()];
        let w = t(DType::U64, &[3], 9);
        let sets = vec![
            vec![t(DType::Bf16, &[2, 2], 1), w.clone()],
            vec![t(DType::Bf16, &[2, 2], 50), w.clone()],
        ];
        let keys = write_input_sets(&path, &names, &sets).unwrap();
        assert_eq!(keys, vec![vec!["0/x", "0/w"], vec!["1/x", "0/w"]]);
        let back = read_tensors(
            &path,
            &[
                ("1/x".into(), DType::Bf16, vec![2, 2]),
                ("0/w".into(), DType::U64, vec![3]),
            ],
        )
        .unwrap();
        assert_eq!(back, vec![sets[1][0].clone(), w]);
        let err = read_tensors(&path, &[("1/w".into(), DType::U64, vec![3])]).unwrap_err();
        assert!(err.to_string().contains("`1/w`: missing"), "{err}");
        let err = read_tensors(&path, &[("0/w".into(), DType::I64, vec![3])]).unwrap_err();
        assert!(err.to_string().contains("expected i64"), "{err}");
        let err = read_tensors(&path, &[("0/w".into(), DType::U64, vec![1, 3])]).unwrap_err();
        assert!(
            err.to_string().contains("shape [3], expected [1, 3]"),
            "{err}"
        );
    }

    #[test]
    fn inconsistent_host_tensors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.safetensors");
        let mut bad = t(DType::F32, &[4], 0);
        bad.bytes.pop();
        let err = write_input_sets(&path, &["x".into()], &[vec![bad]]).unwrap_err();
        assert!(err.to_string().contains("`0/x`"), "{err}");
        let err = write_input_sets(
            &path,
            &["x".into(), "y".into()],
            &[vec![t(DType::F32, &[1], 0)]],
        )
        .unwrap_err();
        assert!(err.to_string().contains("1 tensors for 2 inputs"), "{err}");
    }

    #[test]
    fn garbage_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.safetensors");
        for blob in [
            &b""[..],
            b"\x05\0\0\0\0\0\0\0{{{{{",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            std::fs::write(&path, blob).unwrap();
            let err = read_tensors(&path, &[("0/y".into(), DType::F32, vec![1])]).unwrap_err();
            assert!(
                err.to_string().contains("not a valid safetensors file"),
                "{err}"
            );
        }
        let err = read_tensors(&dir.path().join("none"), &[]).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }
}
