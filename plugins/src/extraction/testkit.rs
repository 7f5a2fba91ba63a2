//! Test helpers: the bundled model's files, a tiny reader for its ONNX MLP (so simulations
//! see the real model's outputs), and a fake nearest-centroid softmax oracle.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ModelMetadata, Profile};
use crate::auth::caller::{Caller, CredentialKind, Scopes};

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

pub fn metadata() -> ModelMetadata {
    let text = std::fs::read_to_string(models_dir().join("digits.json")).expect("digits.json");
    ModelMetadata::from_json(&text).expect("valid metadata")
}

#[derive(Deserialize)]
struct Holdout {
    rows: Vec<Vec<f32>>,
    labels: Vec<usize>,
}

/// The held-out rows and their true labels.
pub fn holdout() -> (Vec<Vec<f32>>, Vec<usize>) {
    let text = std::fs::read_to_string(models_dir().join("digits_holdout.json"))
        .expect("digits_holdout.json");
    let h: Holdout = serde_json::from_str(&text).expect("holdout JSON");
    (h.rows, h.labels)
}

/// The committed profile.
pub fn shipped_profile() -> Profile {
    let text =
        std::fs::read_to_string(models_dir().join("digits.profile.json")).expect("profile file");
    Profile::from_json(&text).expect("valid profile")
}

pub fn caller(consumer: &str, group: Option<&str>) -> Caller {
    Caller::new(
        consumer.to_string(),
        "default".to_string(),
        Scopes::All,
        group.map(str::to_string),
        CredentialKind::ApiKey {
            key_id: format!("key-{consumer}"),
        },
    )
}

/// Something that answers queries with probabilities.
pub trait Oracle {
    fn predict(&self, row: &[f32]) -> Vec<f32>;
}

/// Fake outputs: softmax of −distance²/T to the metadata's class centroids.
pub struct CentroidSoftmax {
    centroids: Vec<Vec<f32>>,
    temperature: f32,
}

impl CentroidSoftmax {
    pub fn new(meta: &ModelMetadata, temperature: f32) -> Self {
        CentroidSoftmax {
            centroids: meta.training.class_centroids.clone(),
            temperature,
        }
    }
}

impl Oracle for CentroidSoftmax {
    fn predict(&self, row: &[f32]) -> Vec<f32> {
        let logits: Vec<f32> = self
            .centroids
            .iter()
            .map(|c| {
                -c.iter()
                    .zip(row)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    / self.temperature
            })
            .collect();
        softmax(&logits)
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The bundled `digits.onnx` MLP (W1,b1 → ReLU → W2,b2 → softmax), read from the
/// ONNX file's initializers with a minimal protobuf reader.
pub struct DigitsMlp {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    hidden: usize,
}

impl DigitsMlp {
    pub fn load() -> Self {
        let bytes = std::fs::read(models_dir().join("digits.onnx")).expect("digits.onnx");
        let graph = fields(&bytes)
            .into_iter()
            .find(|(f, _)| *f == 7)
            .expect("graph")
            .1;
        let mut tensors = std::collections::HashMap::new();
        for (f, init) in fields(graph) {
            if f != 5 {
                continue;
            }
            let mut name = String::new();
            let mut data = Vec::new();
            for (g, v) in fields(init) {
                match g {
                    8 => name = String::from_utf8_lossy(v).into_owned(),
                    9 => {
                        data = v
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect()
                    }
                    _ => {}
                }
            }
            tensors.insert(name, data);
        }
        let take = |n: &str| tensors.get(n).cloned().expect(n);
        let b1 = take("B1");
        DigitsMlp {
            hidden: b1.len(),
            w1: take("W1"),
            b1,
            w2: take("W2"),
            b2: take("B2"),
        }
    }
}

impl Oracle for DigitsMlp {
    fn predict(&self, row: &[f32]) -> Vec<f32> {
        let h = self.hidden;
        let k = self.b2.len();
        let mut hid = self.b1.clone();
        // W1 carries the training's 1/16 input scaling (models/train_digits.py).
        for (x, w) in row.iter().zip(self.w1.chunks_exact(h)) {
            for (acc, wij) in hid.iter_mut().zip(w) {
                *acc += x * wij;
            }
        }
        let mut logits = self.b2.clone();
        for (v, w) in hid.iter().zip(self.w2.chunks_exact(k)) {
            let v = v.max(0.0);
            for (acc, wjc) in logits.iter_mut().zip(w) {
                *acc += v * wjc;
            }
        }
        softmax(&logits)
    }
}

/// Length-delimited and varint fields of one protobuf message: (field number, bytes).
/// Varint values are returned as empty slices (we only need length-delimited fields).
fn fields(mut b: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        while let Some((&byte, rest)) = b.split_first() {
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut b);
                out.push((field, &b[..0]));
            }
            1 => b = &b[8..],
            2 => {
                let len = varint(&mut b) as usize;
                out.push((field, &b[..len]));
                b = &b[len..];
            }
            5 => b = &b[4..],
            _ => panic!("unsupported protobuf wire type {wire}"),
        }
    }
    out
}

/// Outputs of `oracle` for every row.
pub fn outputs(oracle: &dyn Oracle, rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    rows.iter().map(|r| oracle.predict(r)).collect()
}
