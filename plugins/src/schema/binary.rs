//! The binary tensor data extension (as tritonclient sends it): the first
//! `Inference-Header-Content-Length` bytes are the JSON request; each input with
//! `parameters.binary_data_size` and no `data` takes its bytes, in input order, from the rest.

use super::ValidationLimits;
use super::contract::{Datatype, ModelContract};
use super::parse::{Base, Collected, Ctx, Scalar, Sink, data_pointer, detail, push};
use super::v2::{TensorData, ValidatedRequest, check_request, parse_request};
use crate::{Code, Denial};

/// The request header giving the JSON header's length (lower case, as `http` stores names).
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Checks a binary-extension v2 request: `header_length` is the
/// `Inference-Header-Content-Length` value. Framing faults are 400 `bad_request`: a length
/// that is not a decimal number, zero or beyond the body; an input with both `data` and
/// `binary_data_size`; a size that differs from `product(shape)` × the datatype's size (for
/// BYTES: the 4-byte little-endian length prefixes must fill it exactly, one per element);
/// sizes that do not add up to exactly the bytes after the header. Everything else is checked
/// as in [`validate_v2`](super::validate_v2); value problems in binary data point at the
/// element's flat index (`/inputs/0/data/130`).
pub fn validate_v2_binary(
    body: &[u8],
    header_length: &str,
    contract: &ModelContract,
    limits: &ValidationLimits,
) -> Result<ValidatedRequest, Denial> {
    let n = header_len(header_length, body.len())?;
    let (json, mut rest) = body.split_at(n);
    let after = rest.len();
    let mut ctx = Ctx::new(limits);
    let mut raw = parse_request(json, contract, &mut ctx)?;
    for t in raw.inputs.iter_mut().flatten() {
        let Some(size) = t.binary_size.take() else {
            continue;
        };
        let i = t.index;
        let at = || format!("/inputs/{i}/parameters/binary_data_size");
        if t.data.is_some() {
            return Err(framing(
                format!("input {i} has both \"data\" and binary_data_size"),
                at(),
            ));
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= rest.len())
            .ok_or_else(|| {
                framing(
                    format!("binary_data_size values add up to more than the {after} bytes after the JSON header"),
                    at(),
                )
            })?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        t.data = Some(match (t.datatype, t.product()) {
            (Some(dt), Some(count)) => decode(chunk, dt, count, i, &mut ctx)?,
            // The contract check refuses the missing or invalid shape/datatype.
            _ => Collected::new(Sink::Discard),
        });
    }
    if !rest.is_empty() {
        return Err(Denial::new(
            Code::BadRequest,
            format!(
                "{} bytes after the JSON header are not claimed by any input's binary_data_size",
                rest.len()
            ),
        ));
    }
    let request = check_request(&mut ctx, contract, raw);
    ctx.finish("request does not match the model's inputs")?;
    Ok(request)
}

fn header_len(value: &str, body: usize) -> Result<usize, Denial> {
    let value = value.trim();
    let n = Some(value)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<usize>().ok())
        .ok_or_else(|| {
            Denial::new(
                Code::BadRequest,
                "Inference-Header-Content-Length is not a number",
            )
        })?;
    if n == 0 {
        return Err(Denial::new(
            Code::BadRequest,
            "Inference-Header-Content-Length is 0; a JSON request header is required",
        ));
    }
    if n > body {
        return Err(Denial::new(
            Code::BadRequest,
            format!("Inference-Header-Content-Length is {n} but the body has {body} bytes"),
        ));
    }
    Ok(n)
}

fn framing(message: String, at: String) -> Denial {
    Denial::new(Code::BadRequest, message)
        .with_details(vec![detail(at, "does not match the binary data")])
}

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Decodes one input's binary data (little-endian, row-major) into a flat [`Collected`].
fn decode(
    chunk: &[u8],
    dt: Datatype,
    count: usize,
    input: usize,
    ctx: &mut Ctx<'_>,
) -> Result<Collected, Denial> {
    let at = || format!("/inputs/{input}/parameters/binary_data_size");
    let base = Base::V2 { input };
    let Some(size) = dt.byte_size() else {
        return decode_bytes(chunk, count, input, ctx).map(|d| Collected::flat(dt, d));
    };
    if count.checked_mul(size) != Some(chunk.len()) {
        return Err(framing(
            format!(
                "input {input}: binary_data_size is {} bytes but {count} {dt} elements take {}",
                chunk.len(),
                count.saturating_mul(size)
            ),
            at(),
        ));
    }
    let mut data = TensorData::with_capacity(dt, count);
    let mut bad = 0;
    for (k, b) in chunk.chunks_exact(size).enumerate() {
        let v = match dt {
            Datatype::Bool => match b[0] {
                0 => Scalar::B(false),
                1 => Scalar::B(true),
                _ => {
                    data.push_default();
                    bad += 1;
                    ctx.problem(|| data_pointer(base, &[k]), "BOOL bytes must be 0 or 1");
                    continue;
                }
            },
            Datatype::Uint8 => Scalar::U(b[0].into()),
            Datatype::Uint16 => Scalar::U(u16::from_le_bytes(le(b)).into()),
            Datatype::Uint32 => Scalar::U(u32::from_le_bytes(le(b)).into()),
            Datatype::Uint64 => Scalar::U(u64::from_le_bytes(le(b))),
            Datatype::Int8 => Scalar::I(i8::from_le_bytes(le(b)).into()),
            Datatype::Int16 => Scalar::I(i16::from_le_bytes(le(b)).into()),
            Datatype::Int32 => Scalar::I(i32::from_le_bytes(le(b)).into()),
            Datatype::Int64 => Scalar::I(i64::from_le_bytes(le(b))),
            Datatype::Fp16 => Scalar::F(f16_to_f32(u16::from_le_bytes(le(b))).into()),
            Datatype::Fp32 => Scalar::F(f32::from_le_bytes(le(b)).into()),
            Datatype::Fp64 => Scalar::F(f64::from_le_bytes(le(b))),
            Datatype::Bytes => Scalar::S(""),
        };
        if let Err(e) = push(&mut data, dt, v) {
            data.push_default();
            bad += 1;
            ctx.problem(|| data_pointer(base, &[k]), e.message(dt));
        }
    }
    let mut col = Collected::flat(dt, data);
    col.bad = bad;
    Ok(col)
}

/// BYTES elements: a 4-byte little-endian length, then that many bytes, `count` times,
/// filling the chunk exactly.
fn decode_bytes(
    mut chunk: &[u8],
    count: usize,
    input: usize,
    ctx: &mut Ctx<'_>,
) -> Result<TensorData, Denial> {
    let at = || format!("/inputs/{input}/parameters/binary_data_size");
    let total = chunk.len();
    let mut out = Vec::with_capacity(count.min(total / 4));
    while !chunk.is_empty() {
        if out.len() == count {
            return Err(framing(
                format!(
                    "input {input}: BYTES data holds more than the {count} elements of its shape"
                ),
                at(),
            ));
        }
        if chunk.len() < 4 {
            return Err(framing(
                format!(
                    "input {input}: BYTES element {} has a truncated length prefix",
                    out.len()
                ),
                at(),
            ));
        }
        let (len, tail) = chunk.split_at(4);
        let len = u32::from_le_bytes(le(len)) as usize;
        if tail.len() < len {
            return Err(framing(
                format!(
                    "input {input}: BYTES element {} runs past binary_data_size",
                    out.len()
                ),
                at(),
            ));
        }
        if len > ctx.limits.max_string_bytes {
            return Err(Denial::new(
                Code::PayloadTooLarge,
                format!(
                    "a BYTES element is longer than {} bytes",
                    ctx.limits.max_string_bytes
                ),
            )
            .with_details(vec![detail(
                data_pointer(Base::V2 { input }, &[out.len()]),
                format!("{len} bytes"),
            )]));
        }
        let (element, tail) = tail.split_at(len);
        out.push(element.to_vec());
        chunk = tail;
    }
    if out.len() != count {
        return Err(framing(
            format!(
                "input {input}: BYTES data holds {} elements; its shape needs {count}",
                out.len()
            ),
            at(),
        ));
    }
    Ok(TensorData::Bytes(out))
}

/// IEEE 754 half precision to single precision (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn digits() -> ModelContract {
        let text = include_str!("../../../models/digits.json");
        ModelContract::from_metadata_json(&serde_json::from_str(text).unwrap()).unwrap()
    }

    /// What tritonclient's `InferInput.set_data_from_numpy(binary_data=True)` and
    /// `_get_inference_request` produce: the JSON header, then the raw little-endian bytes.
    fn triton_body(rows: usize, values: &[f32], size: Option<usize>) -> (Vec<u8>, String) {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = json!({
            "inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32",
                "parameters": {"binary_data_size": size.unwrap_or(raw.len())}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]
        });
        let mut body = serde_json::to_vec(&header).unwrap();
        let n = body.len();
        body.extend_from_slice(&raw);
        (body, n.to_string())
    }

    fn run(body: &[u8], len: &str) -> Result<ValidatedRequest, Denial> {
        validate_v2_binary(body, len, &digits(), &ValidationLimits::default())
    }

    #[test]
    fn tritonclient_fp32_request_passes() {
        let values: Vec<f32> = (0..128).map(|i| (i % 16) as f32).collect();
        let (body, len) = triton_body(2, &values, None);
        let r = run(&body, &len).unwrap();
        assert_eq!(r.batch, 2);
        assert_eq!(r.inputs[0].as_f32().unwrap(), &values[..]);
    }

    #[test]
    fn tampered_framing_is_400() {
        let values = vec![1.0f32; 64];
        let (body, len) = triton_body(1, &values, None);
        let n: usize = len.parse().unwrap();
        // A header length one past the JSON leaves a raw byte in it: invalid JSON, also 400.
        let e = run(&body, &(n + 1).to_string()).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        for (b, l) in [
            (&body[..body.len() - 1], len.clone()),
            (&body[..], (body.len() + 1).to_string()),
            (&body[..], "0".into()),
            (&body[..], "-3".into()),
            (&body[..], "12a".into()),
        ] {
            let e = run(b, &l).unwrap_err();
            assert_eq!(e.code, Code::BadRequest, "{l}: {e:?}");
        }
        let mut longer = body.clone();
        longer.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(run(&longer, &len).unwrap_err().code, Code::BadRequest);
        // A size that matches the bytes present but not the shape.
        let (body, len) = triton_body(1, &[1.0; 63], None);
        let e = run(&body, &len).unwrap_err();
        assert_eq!(e.code, Code::BadRequest);
        assert_eq!(e.details[0].path, "/inputs/0/parameters/binary_data_size");
        // A size beyond the bytes present.
        let (body, len) = triton_body(1, &values, Some(300));
        assert_eq!(run(&body, &len).unwrap_err().code, Code::BadRequest);
    }

    #[test]
    fn binary_values_are_checked_like_json() {
        let mut values = vec![1.0f32; 128];
        values[70] = f32::NAN;
        values[100] = 20.0;
        let (body, len) = triton_body(2, &values, None);
        let e = run(&body, &len).unwrap_err();
        assert_eq!(e.code, Code::InvalidInput);
        let paths: Vec<_> = e.details.iter().map(|d| d.path.as_str()).collect();
        // Values that are not FP32 numbers first; the range once they all are.
        assert_eq!(paths, vec!["/inputs/0/data/70"]);
        values[70] = 0.5;
        let (body, len) = triton_body(2, &values, None);
        let e = run(&body, &len).unwrap_err();
        assert_eq!(e.details[0].path, "/inputs/0/data/100");
    }

    #[test]
    fn both_data_and_binary_size_is_400() {
        let header = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
            "parameters": {"binary_data_size": 0}, "data": vec![0.0; 64]}]});
        let body = serde_json::to_vec(&header).unwrap();
        let e = run(&body, &body.len().to_string()).unwrap_err();
        assert_eq!(e.code, Code::BadRequest);
    }

    #[test]
    fn mixed_json_and_binary_inputs_and_bytes() {
        let c = ModelContract::from_metadata_json(&json!({"name": "m", "max_batch_size": 4,
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [-1, 2]},
                {"name": "mask", "datatype": "BOOL", "shape": [-1, 2]},
                {"name": "half", "datatype": "FP16", "shape": [-1, 1]},
                {"name": "ids", "datatype": "INT16", "shape": [-1, 2]}]}))
        .unwrap();
        let mut text = Vec::new();
        for s in [&b"ab"[..], b"", b"xyz", b"q"] {
            text.extend_from_slice(&(s.len() as u32).to_le_bytes());
            text.extend_from_slice(s);
        }
        let half: Vec<u8> = [0x3c00u16, 0xc000]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let header = json!({"inputs": [
            {"name": "text", "shape": [2, 2], "datatype": "BYTES",
                "parameters": {"binary_data_size": text.len()}},
            {"name": "mask", "shape": [2, 2], "datatype": "BOOL", "data": [[true, false], [false, true]]},
            {"name": "half", "shape": [2, 1], "datatype": "FP16",
                "parameters": {"binary_data_size": half.len()}},
            {"name": "ids", "shape": [2, 2], "datatype": "INT16",
                "parameters": {"binary_data_size": 8}}]});
        let mut body = serde_json::to_vec(&header).unwrap();
        let n = body.len().to_string();
        body.extend_from_slice(&text);
        body.extend_from_slice(&half);
        for v in [1i16, -1, 300, -300] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let limits = ValidationLimits::default();
        let r = validate_v2_binary(&body, &n, &c, &limits).unwrap();
        assert_eq!(
            r.input("text").unwrap().data,
            TensorData::Bytes(vec![b"ab".to_vec(), vec![], b"xyz".to_vec(), b"q".to_vec()])
        );
        assert_eq!(
            r.input("half").unwrap().data,
            TensorData::F32(vec![1.0, -2.0])
        );
        assert_eq!(
            r.input("ids").unwrap().data,
            TensorData::I64(vec![1, -1, 300, -300])
        );
        // One BYTES prefix claiming more than is there.
        let mut bad = body.clone();
        bad[n.parse::<usize>().unwrap()] = 9;
        assert_eq!(
            validate_v2_binary(&bad, &n, &c, &limits).unwrap_err().code,
            Code::BadRequest
        );
    }

    #[test]
    fn half_precision_decoding() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
