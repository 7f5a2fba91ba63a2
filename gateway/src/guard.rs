//! Stage 6, extraction detection, for both backends: before the backend, a blocked consumer
//! is refused and a throttled one gets a cut rate ([`screen`]); after it, the input rows and
//! the scored output feed the detector, which decides how the output is hardened
//! ([`assess`]). The embedded backend hands over its tensors; an HTTP backend's buffered
//! v2 response is parsed and rewritten ([`harden_v2_response`]).

use bytes::Bytes;

use modelgate_plugins::auth::Caller;
use modelgate_plugins::extraction::{Action, Identity as ExtractionIdentity, OutputPolicy};
use modelgate_plugins::ratelimit::{LimitSpec, RateSpec};
use modelgate_plugins::schema::{V2Response, ValidatedRequest};
use modelgate_plugins::{Code, Denial};

use crate::authn::unix_now;
use crate::pipeline::{Shared, rate_denial};
use crate::snapshot::ExtractionGuard;

/// Before the backend: refuses a consumer the detector blocks (403
/// `extraction_suspected`), and applies the throttle rung's cut rate (429).
pub fn screen(
    shared: &Shared,
    plan: Option<&LimitSpec>,
    guard: &ExtractionGuard,
    caller: &Caller,
    route: &str,
    cost: u32,
) -> Result<(), Denial> {
    let who = identity(guard, caller);
    let now = unix_now();
    // One look-up on the common path; the denial (with its `Retry-After`) only for a block.
    let action = guard.detector.action_for(&who, now);
    if action == Action::Block
        && let Some(denial) = guard.detector.denial_for(&who, now)
    {
        return Err(denial);
    }
    match plan {
        Some(plan) if action >= Action::Throttle => {
            throttle(shared, plan, guard, caller, route, cost)
        }
        _ => Ok(()),
    }
}

/// A consumer at the `throttle` rung gets a cut rate on top of its plan: the plan's rate and
/// burst times the detector's throttle factor, in a bucket of its own.
fn throttle(
    shared: &Shared,
    plan: &LimitSpec,
    guard: &ExtractionGuard,
    caller: &Caller,
    route: &str,
    cost: u32,
) -> Result<(), Denial> {
    let factor = guard.detector.options().throttle_factor.clamp(0.0, 1.0);
    let scale = |n: u32| ((n as f32 * factor) as u32).max(1);
    let cut = RateSpec::new(scale(plan.rate.count.get()), plan.rate.per)
        .and_then(|rate| LimitSpec::new(rate, scale(plan.burst.get())).ok());
    let Some(cut) = cut else { return Ok(()) };
    let scope = format!("{route}#extraction-throttle");
    match shared
        .limiter
        .check(&caller.consumer, &scope, &cut, None, cost.max(1))
    {
        Ok(_) => Ok(()),
        Err(refusal) => Err(rate_denial(&refusal)),
    }
}

/// An HTTP backend returns only the outputs a request names: one that names outputs must
/// include the scored one, or its answer could not be checked (422 before forwarding).
pub fn check_requested_outputs(
    guard: &ExtractionGuard,
    request: &ValidatedRequest,
) -> Result<(), Denial> {
    if request.outputs.is_empty() || request.outputs.contains(&guard.output) {
        Ok(())
    } else {
        Err(Denial::new(
            Code::InvalidInput,
            format!(
                "this route checks the {:?} output of every inference; requests that name outputs must include it",
                guard.output
            ),
        ))
    }
}

/// The rows the detector reads: the request's single input (the snapshot checked the
/// contract has exactly one FP32/FP16 input).
pub fn input_rows(request: &ValidatedRequest) -> Option<&[f32]> {
    request.inputs.first().and_then(|t| t.as_f32())
}

fn identity<'a>(guard: &ExtractionGuard, caller: &'a Caller) -> ExtractionIdentity<'a> {
    ExtractionIdentity::of(caller).trusted(guard.trusted.contains(&caller.consumer))
}

/// The action reported (metric, access log) for a request with rows answered with the top-1
/// label because each was itself suspicious, before the consumer reached `harden`.
pub const HARDENED_QUERY: &str = "harden_query";

/// After the backend: feeds the detector with `rows` and the scored output (`scores`, rows of
/// the profile's classes), hardens `scores` in place and returns the request's policy (which
/// also decides the other outputs: [`OutputPolicy::keeps_other_output`]; rows hardened on
/// their own are stronger still). An action of `observe` or more (or [`HARDENED_QUERY`])
/// goes to `action`, and a changed action of the consumer or its group to the audit log. A
/// detector error (a shape the contract did not fix, non-finite values) is logged and
/// answered with the suspect policy, never with unhardened outputs.
pub fn assess(
    guard: &ExtractionGuard,
    caller: &Caller,
    rows: &[f32],
    scores: &mut [f32],
    action: &mut Option<&'static str>,
) -> OutputPolicy {
    let who = identity(guard, caller);
    match guard.detector.observe(&who, rows, scores, unix_now()) {
        Ok(assessment) => {
            if !assessment.hardened_rows.is_empty() {
                *action = Some(HARDENED_QUERY);
            } else if assessment.action >= Action::Observe {
                *action = Some(assessment.action.as_str());
            }
            if assessment.changed && assessment.action >= Action::Observe {
                log::warn!(
                    target: "audit",
                    "{}",
                    serde_json::json!({
                        "event": "extraction_suspected",
                        "time": unix_now(),
                        "consumer": caller.consumer,
                        "group": caller.group,
                        "action": assessment.action.as_str(),
                        "combined": assessment.combined,
                        "reason": assessment.reason.map(|r| r.as_str()),
                        "queries": assessment.queries_seen,
                    })
                );
            }
            guard.detector.harden_assessed(rows, scores, &assessment);
            assessment.output
        }
        Err(e) => {
            log::error!("extraction detector: {e}");
            let policy = guard.detector.options().suspect_output;
            guard.detector.harden(rows, scores, policy);
            policy
        }
    }
}

/// After an HTTP backend: the buffered 2xx `body` as the consumer may see it — parsed as a
/// v2 response, assessed and hardened like an embedded answer (unchanged bytes when the
/// policy is [`OutputPolicy::Full`]). A body that cannot be read
/// as one (not v2 JSON, the scored output missing or of the wrong size, binary tensors) is
/// logged and refused with 502 `upstream_invalid_response`: nothing unchecked goes back.
pub fn harden_v2_response(
    guard: &ExtractionGuard,
    caller: &Caller,
    request: &ValidatedRequest,
    body: Bytes,
    action: &mut Option<&'static str>,
) -> Result<Bytes, Denial> {
    let classes = guard.detector.profile().classes;
    let rows = input_rows(request).unwrap_or_default();
    let expected = request.batch.max(1) * classes;
    let mut response = V2Response::parse(&body, &guard.output, expected).map_err(|reason| {
        log::warn!(
            "extraction guard: upstream response refused (consumer {}): {reason}",
            caller.consumer
        );
        Denial::new(
            Code::UpstreamInvalidResponse,
            "the upstream's answer is not a KServe v2 response this gateway can check",
        )
    })?;
    let policy = assess(guard, caller, rows, &mut response.scores, action);
    if policy == OutputPolicy::Full {
        drop(response);
        return Ok(body);
    }
    Ok(Bytes::from(response.into_json(policy)))
}
