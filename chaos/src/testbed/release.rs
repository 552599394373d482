//! Deploys on a running testbed: a gateway or processor replaced by another build of
//! `flashsale` — a candidate binary, other environment — on the same address, and put back.
//! What a canary and its rollback do to a real deployment, one instance at a time.
//!
//! Every service a deploy touches runs with `FLASHSALE_RELEASE` set to the build's name, so its
//! `/metrics` (`flashsale_build_info`) and every outcome it publishes say which build it is, and
//! Prometheus scrapes it with the label `release="<name>"` (the release the testbed started
//! with has no label): a gate's query selects the canary with `{release="candidate"}`.

use std::path::PathBuf;
use std::time::Instant;

use super::{Testbed, TestbedError};
use crate::faults::Target;
use crate::process::ProcessSpec;

/// A build a deploy puts out.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    /// Its name: `FLASHSALE_RELEASE` and the scrape label `release`.
    pub release: String,
    /// The `flashsale` binary (absolute).
    pub program: PathBuf,
    /// Set on top of the service's environment (a variable of the same name is replaced).
    pub env: Vec<(String, String)>,
}

/// A service running another build: which, and what it ran before.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub release: String,
    original: ProcessSpec,
}

impl Testbed {
    /// The build a deploy put on the service `name` (`processor[1]`), if any.
    pub fn release_of(&self, name: &str) -> Option<String> {
        self.deployed.get(name).map(|d| d.release.clone())
    }

    /// The services running a deployed build, by name.
    pub fn deployed(&self) -> Vec<(String, String)> {
        self.deployed.iter().map(|(name, d)| (name.clone(), d.release.clone())).collect()
    }

    /// Replaces `target` (a gateway or processor) with `build`, or, with `None`, puts back what
    /// it ran before the first deploy (a rollback; nothing to do if it runs the release). The
    /// service stops gracefully (a processor finishes the orders in hand and leaves its group, a
    /// gateway drains, out of the front's rotation meanwhile) and is ready again before this
    /// returns. Returns how long it took.
    pub async fn deploy(&mut self, target: Target, build: Option<&Build>) -> Result<std::time::Duration, TestbedError> {
        let started = Instant::now();
        let name = target.to_string();
        let gateway = match target {
            Target::Gateway(i) if i < self.gateways.len() => Some(i),
            Target::Processor(i) if i < self.processors.len() => None,
            _ => {
                return Err(TestbedError::Deploy(format!("{name}: only an existing gateway or processor is deployed")))
            }
        };
        let current = match gateway {
            Some(i) => self.gateways[i].spec().clone(),
            None => self.processors[target_index(target)].spec().clone(),
        };
        // What it ran before the first deploy: the release.
        let original = self.deployed.get(&name).map_or_else(|| current.clone(), |d| d.original.clone());
        let spec = match (build, self.deployed.get(&name)) {
            (None, None) => return Ok(started.elapsed()),
            (None, Some(_)) => original.clone(),
            (Some(build), _) => {
                let base = original.clone();
                let mut env: Vec<(String, String)> = base
                    .env
                    .iter()
                    .filter(|(k, _)| k != "FLASHSALE_RELEASE" && build.env.iter().all(|(b, _)| b != k))
                    .cloned()
                    .collect();
                env.extend(build.env.iter().cloned());
                env.push(("FLASHSALE_RELEASE".into(), build.release.clone()));
                ProcessSpec { program: build.program.clone(), env, ..base }
            }
        };
        if let Some(i) = gateway {
            self.set_gateway_in_rotation(i, false);
        }
        let result = match gateway {
            Some(i) => self.gateways[i].redeploy(spec).await,
            None => self.processors[target_index(target)].redeploy(spec).await,
        };
        if let Some(i) = gateway {
            self.set_gateway_in_rotation(i, true);
        }
        match build {
            Some(build) => {
                self.deployed.insert(name.clone(), Deployed { release: build.release.clone(), original });
            }
            None => {
                self.deployed.remove(&name);
            }
        }
        if let Some(monitoring) = &self.monitoring {
            monitoring.set_targets(&self.scrape_targets())?;
        }
        result.map_err(|e| TestbedError::Deploy(format!("{name}: {e}")))?;
        Ok(started.elapsed())
    }
}

fn target_index(target: Target) -> usize {
    match target {
        Target::Gateway(i) | Target::Processor(i) => i,
        _ => 0,
    }
}
