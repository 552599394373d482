//! Deploys on a running testbed: a gateway or processor replaced by another build of
//! `flashsale` — a candidate binary, other environment — on the same address, and put back.
//! What a canary and its rollback do to a real deployment, one instance at a time. On
//! containers a build is an image (a candidate's built from its binary) and the instance is
//! replaced by a container of that image on the same published port and data directory.
//!
//! Every service a deploy touches runs with `FLASHSALE_RELEASE` set to the build's name, so its
//! `/metrics` (`flashsale_build_info`) and every outcome it publishes say which build it is, and
//! Prometheus scrapes it with the label `release="<name>"` (the release the testbed started
//! with has no label): a gate's query selects the canary with `{release="candidate"}`.

use std::path::PathBuf;
use std::time::Instant;

use super::placement::{port, RuntimeKind};
use super::{Testbed, TestbedError};
use crate::containers::images;
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
        // Whether what ran before runs again after a failure: then the deploy changed nothing.
        let (result, restored) = match self.placement.kind() {
            RuntimeKind::Processes => {
                let result = match gateway {
                    Some(i) => self.gateways[i].redeploy(spec).await,
                    None => self.processors[target_index(target)].redeploy(spec).await,
                };
                (result.map_err(|e| e.to_string()), false)
            }
            RuntimeKind::Containers => match self.redeploy_container(target, spec, build).await {
                Ok(()) => (Ok(()), false),
                Err((e, restored)) => (Err(e), restored),
            },
        };
        if let Some(i) = gateway {
            self.set_gateway_in_rotation(i, true);
        }
        match build {
            _ if restored => {}
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

    /// A deploy on containers: the build's image (a candidate's built from its binary,
    /// [`images::build_candidate`]; the release's as it ran), the service's container stopped
    /// gracefully, and the build started in a container of its own on the same published port
    /// and data directory (`gateway-0-candidate`; the release's under its first name again). Once
    /// that one is ready the stopped container goes (its log kept); if it is not, the stopped one
    /// is started again and the deploy fails: `Err((why, whether what ran before runs again))`.
    async fn redeploy_container(
        &mut self,
        target: Target,
        spec: ProcessSpec,
        build: Option<&Build>,
    ) -> Result<(), (String, bool)> {
        let image = match build {
            Some(build) => {
                let program = build.program.clone();
                // Nothing is stopped yet: a failure here leaves what runs.
                tokio::task::spawn_blocking(move || images::build_candidate(&program))
                    .await
                    .map_err(|e| (e.to_string(), true))?
                    .map_err(|e| (format!("the candidate's image: {e}"), true))?
                    .image
            }
            None => spec.program.display().to_string(),
        };
        let (inside, slot) = match target {
            Target::Gateway(i) => (port::GATEWAY, &mut self.gateways[i]),
            _ => (port::PROCESSOR, &mut self.processors[target_index(target)]),
        };
        let published = slot.addr().port();
        let dir = slot.spec().cwd.clone();
        slot.stop().await.map_err(|e| (e.to_string(), false))?;
        let suffix = build.map(|b| container_suffix(&b.release));
        match self.placement.start_container(inside, Some(published), &dir, spec, image, suffix.as_deref()).await {
            Ok(started) => {
                // The stopped container goes, its log written beside the new one's.
                drop(std::mem::replace(slot, started));
                Ok(())
            }
            Err(e) => match slot.start_again().await {
                Ok(()) => Err((format!("{e}; the previous build started again"), true)),
                Err(again) => Err((format!("{e}; the previous build did not start again either: {again}"), false)),
            },
        }
    }
}

/// A release's name as part of a container's name (`[a-z0-9-]`, at most 32 characters).
fn container_suffix(release: &str) -> String {
    let cleaned: String = release
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(32)
        .collect();
    match cleaned.trim_matches('-') {
        "" => "deployed".into(),
        name => name.into(),
    }
}

fn target_index(target: Target) -> usize {
    match target {
        Target::Gateway(i) | Target::Processor(i) => i,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_release_name_becomes_a_container_name_part() {
        assert_eq!(super::container_suffix("candidate"), "candidate");
        assert_eq!(super::container_suffix("v2.1 (canary)"), "v2-1--canary");
        assert_eq!(super::container_suffix("//"), "deployed");
        assert_eq!(super::container_suffix(&"x".repeat(80)).len(), 32);
    }
}
