//! What every target shares: the contracts and limits a fuzz input picks from, and the
//! checks every refusal must pass.
#![allow(dead_code)]

use modelgate_plugins::Denial;
use modelgate_plugins::schema::{ModelContract, ValidatedRequest, ValidationLimits};
use serde_json::json;

/// The bundled digits model's contract, and one with every datatype family, a dynamic
/// dimension, a BYTES input and a feature range.
pub fn contracts() -> [ModelContract; 2] {
    let digits: serde_json::Value =
        serde_json::from_str(include_str!("../../models/digits.json")).unwrap();
    let mixed = json!({
        "name": "m", "max_batch_size": 4,
        "feature_range": {"min": -8.0, "max": 8.0},
        "inputs": [
            {"name": "a", "datatype": "INT8", "shape": [-1, 2]},
            {"name": "b", "datatype": "FP16", "shape": [-1, -1]},
            {"name": "c", "datatype": "BYTES", "shape": [-1]},
            {"name": "d", "datatype": "BOOL", "shape": [-1, 1]},
            {"name": "e", "datatype": "UINT64", "shape": [-1]}
        ],
        "outputs": [{"name": "y"}, {"name": "z"}]
    });
    [
        ModelContract::from_metadata_json(&digits).unwrap(),
        ModelContract::from_metadata_json(&mixed).unwrap(),
    ]
}

/// The default limits, or tight ones (shallow, few elements, short strings) so the limit
/// paths are reached with small inputs.
pub fn limits(tight: bool) -> ValidationLimits {
    if tight {
        ValidationLimits {
            max_depth: 4,
            max_elements: 40,
            max_string_bytes: 8,
            max_errors: 2,
            allow_gzip: true,
            max_decoded_bytes: 4096,
            max_ratio: 20,
            require_content_type: false,
        }
    } else {
        ValidationLimits::default()
    }
}

/// Splits a fuzz input into a selector byte and the rest.
pub fn split(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(&b, rest)| (b, rest))
}

/// A body validator's signature.
pub type Validator =
    fn(&[u8], &ModelContract, &ValidationLimits) -> Result<ValidatedRequest, Denial>;

/// Runs `validate` on a fuzz input (the first byte picks the contract and the limits, the
/// rest is the body) and checks its verdict.
pub fn validate_body(data: &[u8], validate: Validator) {
    let Some((pick, body)) = split(data) else {
        return;
    };
    let contract = &contracts()[usize::from(pick & 1)];
    let limits = limits(pick & 2 != 0);
    check_verdict(validate(body, contract, &limits), contract, &limits);
}

/// A verdict on a body: an accepted request as the contract promises, or a refusal as
/// every refusal must be.
pub fn check_verdict(
    verdict: Result<ValidatedRequest, Denial>,
    contract: &ModelContract,
    limits: &ValidationLimits,
) {
    match verdict {
        Ok(request) => check_accepted(&request, contract),
        Err(denial) => check_denial(&denial, limits),
    }
}

/// A refusal of a body is a client error with a message, never a server error, and lists
/// no more details than the limit allows.
pub fn check_denial(denial: &Denial, limits: &ValidationLimits) {
    let status = denial.status().as_u16();
    assert!(
        matches!(status, 400 | 413 | 415 | 422),
        "status {status} for a body: {denial:?}"
    );
    assert!(!denial.message.is_empty(), "a refusal without a message");
    assert!(
        denial.details.len() <= limits.max_errors,
        "{} details over the limit {}",
        denial.details.len(),
        limits.max_errors
    );
}

/// An accepted request holds what the contract promises: every input once, in the
/// contract's order, with its datatype, a shape of the contract's rank matching its fixed
/// dimensions, exactly `product(shape)` values, the batch within the model's bound, and
/// every floating-point value finite and in the feature range.
pub fn check_accepted(request: &ValidatedRequest, contract: &ModelContract) {
    assert_eq!(request.inputs.len(), contract.inputs.len());
    if contract.max_batch_size > 0 {
        assert!((1..=contract.max_batch_size).contains(&request.batch));
    }
    for (tensor, spec) in request.inputs.iter().zip(&contract.inputs) {
        assert_eq!(tensor.name, spec.name);
        assert_eq!(tensor.datatype, spec.datatype);
        assert_eq!(tensor.shape.len(), spec.shape.len());
        for (&got, &want) in tensor.shape.iter().zip(&spec.shape) {
            assert!(
                want < 0 || got as i64 == want,
                "{:?} vs {:?}",
                tensor.shape,
                spec.shape
            );
        }
        let product = tensor.shape.iter().product::<usize>();
        assert_eq!(
            tensor.data.len(),
            product,
            "values vs shape {:?}",
            tensor.shape
        );
        if let Some(values) = tensor.as_f32() {
            for v in values {
                assert!(v.is_finite());
                if let Some((min, max)) = contract.feature_range {
                    assert!((min..=max).contains(&f64::from(*v)), "{v} out of range");
                }
            }
        }
    }
}
