//! Undoing each fault, and the check that the undo took.

use super::*;

impl Inner {
    /// Undoes a fault; returns the undo step's own check, and whether service through the
    /// client path should be checked next (done by the caller, without the testbed lock).
    pub(super) async fn undo(
        &self,
        testbed: &mut Testbed,
        target: Target,
        undo: &Undo,
    ) -> Result<(Check, bool), FaultError> {
        match undo {
            Undo::Nothing => Ok((Check::new(true, "nothing to undo"), false)),
            Undo::StartAgain => {
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                process.start_again().await?;
                let pid = process.pid().unwrap_or(0);
                Ok((Check::new(pid != 0, format!("started again as pid {pid}")), true))
            }
            Undo::Resume => {
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                process.resume()?;
                let running = wait_for(Duration::from_secs(1), || !process.paused().0).await;
                let observed = process.paused().1;
                Ok((Check::new(running, format!("resumed ({observed})")), true))
            }
            Undo::Reconnect => {
                let network = testbed.network().ok_or(FaultError::NotRunning { target })?.to_string();
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                let container = process.container().ok_or(FaultError::NotRunning { target })?;
                container.connect(&network).await.map_err(|e| FaultError::Container(e.to_string()))?;
                let probe = process.spec().probe.clone();
                let back = wait_for_probe(&probe, Duration::from_secs(10)).await;
                Ok((Check::new(back.is_ok(), format!("back on {network}; its probe: {}", describe(&back))), true))
            }
            Undo::Engine(limit) => Ok((self.engine_lift(testbed, target, Some(limit)).await?, true)),
            Undo::EngineStopped => Ok((self.engine_lift(testbed, target, None).await?, true)),
            Undo::PeerPartition { peer, from } => {
                let proxy = testbed.proxy(*peer).ok_or(FaultError::NoProxy(*peer))?;
                for &direction in Directions::Both.each() {
                    proxy.remove_from(direction, "latency", Some(*from));
                }
                let gone = Directions::Both
                    .each()
                    .iter()
                    .all(|&d| proxy.toxics(d).iter().all(|s| !(s.toxic.name() == "latency" && s.from == Some(*from))));
                // What it held goes on its way now.
                Ok((Check::new(gone, format!("{peer}'s proxy passes {from} ({target}) again")), true))
            }
            Undo::LinkProxy { directions, name, from } => {
                let from = *from;
                let proxies = testbed.link(target).ok_or(FaultError::NoProxy(target))?;
                for proxy in &proxies {
                    for &direction in directions.each() {
                        proxy.remove_from(direction, name, Some(from));
                    }
                }
                let gone = proxies.iter().all(|p| {
                    directions
                        .each()
                        .iter()
                        .all(|&d| p.toxics(d).iter().all(|s| !(s.toxic.name() == *name && s.from == Some(from))))
                });
                Ok((Check::new(gone, format!("{name} for {from} removed from every Redis proxy")), false))
            }
            Undo::Proxy { directions, name } => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                for &direction in directions.each() {
                    proxy.remove(direction, name);
                }
                let gone = directions.each().iter().all(|&d| proxy.toxics(d).iter().all(|s| s.toxic.name() != *name));
                Ok((Check::new(gone, format!("{name} removed from the proxy")), true))
            }
            Undo::ProxyUp => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                proxy.set_down(false);
                Ok((Check::new(!proxy.is_down(), "proxy up"), true))
            }
            Undo::Payment(before) => {
                let url = testbed.payment_url().ok_or(FaultError::NotRunning { target })?;
                let now = self.payment_control(&url, Some(before)).await?;
                Ok((Check::new(&now == before, format!("GET /control: {now}")), false))
            }
            Undo::RedisUnpause => {
                let addr = testbed.redis_direct_addr();
                // Bounded by the pause itself, which Redis ends on time.
                let answer =
                    redis_command(addr, &["CLIENT", "UNPAUSE"], MAX_FAULT_DURATION).await.map_err(FaultError::Redis)?;
                Ok((Check::new(answer.starts_with("+OK"), format!("CLIENT UNPAUSE: {answer}")), true))
            }
            Undo::Cgroup(limit) => {
                let (bit, effect) = (limit.bit(), limit.effect());
                let released = limit.release();
                if let Some(process) = testbed.process(target) {
                    process.enter_on_start(limit.dir.join("cgroup.procs"), false);
                }
                let mut observed = match &released {
                    Ok(()) if limit.home.is_some() => {
                        format!("{effect}; pid {} out of the limit, {} removed", limit.pid, limit.dir.display())
                    }
                    Ok(()) => format!("{effect}; limit lifted from {}", limit.dir.display()),
                    Err(e) => format!("{effect}; {e}"),
                };
                if limit.controller == Controller::Memory && !pid_alive(limit.pid) {
                    // The OOM killer took it: started again, as a kill's heal does.
                    let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                    process.start_again().await?;
                    observed.push_str(&format!("; OOM-killed, started again as pid {}", process.pid().unwrap_or(0)));
                }
                if !bit {
                    observed.push_str(" — the limit never bit: the fault did not land (was the process idle?)");
                }
                Ok((Check::new(released.is_ok() && bit, observed), true))
            }
            Undo::RedisBack { restore } => {
                let process = testbed.process(target).ok_or(FaultError::NotRunning { target })?;
                process.start_again().await?;
                let mut observed = format!("started empty as pid {}", process.pid().unwrap_or(0));
                if let Some(path) = restore {
                    let output = tokio::time::timeout(
                        RESTORE_TIMEOUT,
                        tokio::process::Command::new(testbed.flashsale_bin())
                            .arg("restore")
                            .arg(path)
                            .envs(testbed.admin_env())
                            .stdin(std::process::Stdio::null())
                            .kill_on_drop(true)
                            .output(),
                    )
                    .await
                    .map_err(|_| FaultError::Redis(format!("flashsale restore: no end within {RESTORE_TIMEOUT:?}")))?
                    .map_err(|e| FaultError::Redis(format!("flashsale restore: {e}")))?;
                    if !output.status.success() {
                        return Err(FaultError::Redis(format!(
                            "flashsale restore {}: {}",
                            path.display(),
                            String::from_utf8_lossy(&output.stderr).trim()
                        )));
                    }
                    observed.push_str(&format!("; restored {}", path.display()));
                }
                let keys = redis_command(testbed.redis_direct_addr(), &["DBSIZE"], CONTROL_TIMEOUT)
                    .await
                    .map_err(FaultError::Redis)?;
                let keys: u64 = keys.trim_start_matches(':').parse().unwrap_or(u64::MAX);
                let expected = if restore.is_some() { keys > 0 && keys != u64::MAX } else { keys == 0 };
                Ok((Check::new(expected, format!("{observed}; {keys} keys")), true))
            }
        }
    }
}
