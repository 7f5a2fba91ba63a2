//! Turns the config's plans and route limits into limiter specs, once per snapshot.
//! The limiter's counts live in [`crate::pipeline::Shared`], not here, so a reload that
//! changes the numbers keeps them.

use std::collections::HashMap;

use modelgate_config::{Config, ConfigError, LimitsSpecSection};
use modelgate_plugins::ratelimit::{LimitSpec, parse_quota, parse_rate};

/// The plan every caller gets when its plan is not configured (and no `[plans.default]`
/// replaces it): 10 requests/s, burst 20, 8 in flight, no quota.
pub const BUILT_IN_DEFAULT: (&str, u32, u32) = ("10/s", 20, 8);

/// Limits per plan and per route, ready for the limiter.
pub struct PlanLimits {
    plans: HashMap<String, LimitSpec>,
    default: LimitSpec,
    /// Per route index: an override replacing the plan's limits, and a model-wide limit.
    routes: Vec<(Option<LimitSpec>, Option<LimitSpec>)>,
}

impl PlanLimits {
    /// Parses every plan and route limit; errors carry config paths.
    pub fn build(config: &Config) -> Result<PlanLimits, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut plans = HashMap::new();
        for (name, section) in &config.plans {
            if let Some(spec) = parse_section(&format!("plans.{name}"), section, &mut errors) {
                plans.insert(name.clone(), spec);
            }
        }
        let (rate, burst, concurrency) = BUILT_IN_DEFAULT;
        let built_in = parse_rate(rate)
            .ok()
            .and_then(|r| LimitSpec::new(r, burst).ok())
            .map(|s| s.with_concurrency(concurrency));
        let default = plans.get("default").copied().or(built_in);
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("routes[{i}]");
                (
                    r.limits
                        .as_ref()
                        .and_then(|s| parse_section(&format!("{at}.limits"), s, &mut errors)),
                    r.model_limit
                        .as_ref()
                        .and_then(|s| parse_section(&format!("{at}.model_limit"), s, &mut errors)),
                )
            })
            .collect();
        match default {
            Some(default) if errors.is_empty() => Ok(PlanLimits {
                plans,
                default,
                routes,
            }),
            _ => Err(errors),
        }
    }

    /// The limits for a caller on plan `plan` calling route `route` (index), and the route's
    /// model-wide limit.
    pub fn for_request(&self, plan: &str, route: usize) -> (&LimitSpec, Option<&LimitSpec>) {
        let (override_, model) = self
            .routes
            .get(route)
            .map_or((None, None), |(o, m)| (o.as_ref(), m.as_ref()));
        let spec = override_
            .or_else(|| self.plans.get(plan))
            .unwrap_or(&self.default);
        (spec, model)
    }
}

fn parse_section(
    at: &str,
    s: &LimitsSpecSection,
    errors: &mut Vec<ConfigError>,
) -> Option<LimitSpec> {
    let mut fail = |path: String, message: String| errors.push(ConfigError { path, message });
    let Some(rate_text) = &s.rate else {
        fail(format!("{at}.rate"), "is required (e.g. \"100/s\")".into());
        return None;
    };
    let rate = parse_rate(rate_text)
        .map_err(|e| fail(format!("{at}.rate"), e.to_string()))
        .ok()?;
    let burst = s.burst.unwrap_or(rate.count.get());
    let mut spec = LimitSpec::new(rate, burst)
        .map_err(|e| fail(format!("{at}.burst"), e.to_string()))
        .ok()?;
    if let Some(cap) = s.concurrency {
        if cap == 0 {
            fail(format!("{at}.concurrency"), "must be > 0".into());
            return None;
        }
        spec = spec.with_concurrency(cap);
    }
    if let Some(quota) = &s.quota {
        spec = spec.with_quota(
            parse_quota(quota)
                .map_err(|e| fail(format!("{at}.quota"), e.to_string()))
                .ok()?,
        );
    }
    Some(spec)
}
