//! Applying each fault of the catalogue, and the check that it took effect.

use super::*;

impl Inner {
    pub(super) async fn apply(&self, testbed: &mut Testbed, fault: &Fault) -> Result<(Undo, Check), FaultError> {
        let target = fault.target;
        let on_container = testbed.process(target).is_some_and(|p| p.container().is_some());
        match &fault.action {
            Action::Kill | Action::Terminate | Action::RedisLoss { .. } => {
                let process = running(testbed, target)?;
                let pid = process.pid().unwrap_or(0);
                let status =
                    if fault.action == Action::Terminate { process.stop().await? } else { process.kill().await? };
                let gone = !pid_alive(pid);
                let mut observed = format!(
                    "pid {pid} {} ({})",
                    if gone { "gone" } else { "still alive" },
                    match (status, process.container()) {
                        (Some(s), _) => s.to_string(),
                        (None, Some(c)) => format!("container {} stopped", c.name()),
                        (None, None) => "not reaped".into(),
                    }
                );
                let undo = match &fault.action {
                    Action::RedisLoss { restore } => {
                        let dir = process.spec().cwd.clone();
                        let removed =
                            wipe_redis_data(&dir).map_err(|e| FaultError::Redis(format!("deleting data: {e}")))?;
                        observed.push_str(&format!("; deleted {removed} data file(s) in {}", dir.display()));
                        Undo::RedisBack { restore: restore.clone() }
                    }
                    _ if fault.duration.is_none() && self.supervised.load(Ordering::Relaxed) => {
                        observed.push_str("; the supervisor brings it back");
                        Undo::Nothing
                    }
                    _ => Undo::StartAgain,
                };
                Ok((undo, Check::new(gone, observed)))
            }
            Action::Pause => {
                let process = running(testbed, target)?;
                process.pause()?;
                let stopped = wait_for(Duration::from_secs(1), || process.paused().0).await;
                let observed = process.paused().1;
                Ok((Undo::Resume, Check::new(stopped, observed)))
            }
            Action::Partition { from } => self.partition(testbed, target, *from).await,
            Action::Restart => {
                let process = running(testbed, target)?;
                let before = process.pid().unwrap_or(0);
                process.restart().await?;
                let after = process.pid().unwrap_or(0);
                let ok = after != 0 && after != before && !pid_alive(before);
                Ok((Undo::Nothing, Check::new(ok, format!("pid {before} → {after}, ready"))))
            }
            Action::Network { toxic, directions, toxicity } if matches!(target, Target::RedisLink(_)) => {
                let from = testbed.link_source(target).await.map_err(FaultError::Container)?;
                let proxies = testbed.link(target).ok_or(FaultError::NoProxy(target))?;
                // It lands on something: the replica replicates from that address now.
                let open: u64 = proxies.iter().map(|p| p.open_from(from)).sum();
                for proxy in &proxies {
                    for &direction in directions.each() {
                        proxy.set(direction, ToxicSetting { toxic: *toxic, toxicity: *toxicity, from: Some(from) });
                    }
                }
                // The lab cannot speak from the replica's address: the check is the proxies'
                // settings and the replica's open link; the link as the primary reports it is in
                // the events.
                let set = proxies.iter().all(|p| {
                    directions
                        .each()
                        .iter()
                        .all(|&d| p.toxics(d).iter().any(|s| s.toxic == *toxic && s.from == Some(from)))
                });
                let check = Check::new(
                    set && open > 0,
                    format!(
                        "{} on all {} Redis proxies for connections from {from} (the replica's replication): {open} open connection(s) from there",
                        toxic.name(),
                        proxies.len()
                    ),
                );
                Ok((Undo::LinkProxy { directions: *directions, name: toxic.name(), from }, check))
            }
            Action::Network { toxic, directions, toxicity } => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                for &direction in directions.each() {
                    proxy.set(direction, ToxicSetting { toxic: *toxic, toxicity: *toxicity, from: None });
                }
                let check = check_network(testbed, target, toxic, *directions, *toxicity).await;
                Ok((Undo::Proxy { directions: *directions, name: toxic.name() }, check))
            }
            Action::Down => {
                let proxy = testbed.proxy(target).ok_or(FaultError::NoProxy(target))?;
                proxy.set_down(true);
                let probe = client_probe(testbed, target)?;
                let (took, answer) = timed(&probe, SILENCE_PROBE).await;
                let check = Check::new(
                    answer.is_err() && proxy.is_down(),
                    format!("probe through the proxy: {} after {took:?}", describe(&answer)),
                );
                Ok((Undo::ProxyUp, check))
            }
            Action::PaymentTimeout { latency } => {
                let latency = latency.unwrap_or(self.payment_timeout * 2);
                self.payment_fault(testbed, json!({"latency_ms": latency.as_millis() as u64, "jitter_ms": 0})).await
            }
            Action::PaymentCaptureThenTimeout { latency } => {
                let latency = latency.unwrap_or(self.payment_timeout * 2);
                self.payment_fault(
                    testbed,
                    json!({"latency_ms": latency.as_millis() as u64, "jitter_ms": 0, "capture_then_timeout": true}),
                )
                .await
            }
            Action::PaymentFailures { rate } => self.payment_fault(testbed, json!({"failure_rate": rate})).await,
            Action::PaymentOutage => self.payment_fault(testbed, json!({"outage": true})).await,
            Action::RedisStall => {
                let duration = fault.duration.unwrap_or(MAX_FAULT_DURATION);
                let addr = testbed.redis_direct_addr();
                let ms = duration.as_millis().to_string();
                let answer = redis_command(addr, &["CLIENT", "PAUSE", &ms, "ALL"], CONTROL_TIMEOUT)
                    .await
                    .map_err(FaultError::Redis)?;
                if !answer.starts_with("+OK") {
                    return Err(FaultError::Redis(format!("CLIENT PAUSE answered {answer}")));
                }
                let ping = redis_command(addr, &["PING"], SILENCE_PROBE).await;
                let check = Check::new(ping.is_err(), format!("PING on a new connection: {}", describe(&ping)));
                Ok((Undo::RedisUnpause, check))
            }
            Action::Cpu { cores } => {
                let process = running(testbed, target)?;
                if process.container().is_some() {
                    return self.engine_cpu(testbed, target, *cores).await;
                }
                let limit = Limit::cpu(process.pid().unwrap_or(0), *cores).map_err(FaultError::Cgroup)?;
                // A restart while the fault lasts starts inside the quota too.
                process.enter_on_start(limit.dir.join("cgroup.procs"), true);
                Ok(hold(limit))
            }
            Action::Memory { bytes, restart } if on_container => {
                self.engine_memory(testbed, target, *bytes, *restart).await
            }
            Action::Memory { bytes, restart: false } => {
                let process = running(testbed, target)?;
                let pid = process.pid().unwrap_or(0);
                let cgroup = process.memory_cgroup().map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                let limit =
                    Limit::memory(cgroup, pid, *bytes).map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                Ok(hold(limit))
            }
            Action::Memory { bytes, restart: true } => {
                let process = running(testbed, target)?;
                process.memory_cgroup().map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                // Replaced like a pod whose limit was lowered: stopped (it finishes what it has
                // in hand), then started inside the limit.
                process.stop().await?;
                let cgroup = process.memory_cgroup().map_err(FaultError::Cgroup)?;
                let mut limit =
                    Limit::memory(cgroup, 0, *bytes).map_err(|e| FaultError::Cgroup(format!("{target}: {e}")))?;
                let started = process.start_again().await;
                limit.pid = process.pid().unwrap_or(0);
                let setting = limit.setting();
                let check = match started {
                    Ok(()) => Check::new(
                        limit.holds(),
                        format!("restarted into {setting} as pid {} in {}", limit.pid, limit.dir.display()),
                    ),
                    Err(ProcessError::ExitedEarly { status, .. }) => {
                        let (_, oom) = limit.memory_events().unwrap_or((0, 0));
                        Check::new(
                            oom > 0,
                            format!(
                                "restarted into {setting}: it exited while starting ({status}), {}",
                                limit.effect()
                            ),
                        )
                    }
                    Err(e) => Check::new(false, format!("restarted into {setting}: {e}")),
                };
                Ok((Undo::Cgroup(limit), check))
            }
        }
    }

    /// Saves the provider's behaviour, applies `update`, and checks it in `GET /control`.
    /// `partition` (containers only): off the run's network, or from one peer through its proxy.
    async fn partition(
        &self,
        testbed: &mut Testbed,
        target: Target,
        from: Option<Target>,
    ) -> Result<(Undo, Check), FaultError> {
        let Some(network) = testbed.network().map(str::to_string) else {
            return Err(FaultError::OtherRuntime(format!(
                "partition of {target}: on processes every connection comes from 127.0.0.1, so nothing \
                 cuts one component's links alone; partition runs on containers (--runtime containers)"
            )));
        };
        if let Some(peer) = from {
            testbed.proxy(peer).ok_or(FaultError::NoProxy(peer))?;
        }
        let process = running(testbed, target)?;
        let probe = process.spec().probe.clone();
        let container = process.container().ok_or(FaultError::NotRunning { target })?;
        match from {
            Some(peer) => {
                let ip = container
                    .ip_on(&network)
                    .await
                    .map_err(|e| FaultError::Container(e.to_string()))?
                    .ok_or_else(|| FaultError::Container(format!("{target} has no address on {network}")))?;
                let proxy = testbed.proxy(peer).ok_or(FaultError::NoProxy(peer))?;
                // Held, not dropped: a partition loses packets, but TCP retransmits them once the
                // link is back, so a stream never loses bytes in its middle. (A blackhole here
                // made the processor's Redis connection answer its later requests with the replies
                // to earlier ones that never arrived: it never recovered, a fault no network makes.)
                let stall = Toxic::Latency { latency: MAX_FAULT_DURATION, jitter: Duration::ZERO };
                for &direction in Directions::Both.each() {
                    proxy.set(direction, ToxicSetting { toxic: stall, toxicity: 1.0, from: Some(ip) });
                }
                let set = Directions::Both
                    .each()
                    .iter()
                    .all(|&d| proxy.toxics(d).iter().any(|s| s.toxic == stall && s.from == Some(ip)));
                // It lands on something: the component talks to the peer from that address now.
                let open = proxy.open_from(ip);
                let check = Check::new(
                    set && open > 0,
                    format!(
                        "{peer}'s proxy holds everything from {ip} ({target} on {network}) and back: {open} open connection(s) from there"
                    ),
                );
                Ok((Undo::PeerPartition { peer, from: ip }, check))
            }
            None => {
                container.disconnect(&network).await.map_err(|e| FaultError::Container(e.to_string()))?;
                // Cut off, the lab cannot reach it through its published port either.
                let (took, answer) = timed(&probe, SILENCE_PROBE).await;
                let check = Check::new(
                    answer.is_err(),
                    format!(
                        "off {network}; its probe through the published port: {} after {took:?}",
                        describe(&answer)
                    ),
                );
                Ok((Undo::Reconnect, check))
            }
        }
    }

    async fn payment_fault(&self, testbed: &Testbed, update: Value) -> Result<(Undo, Check), FaultError> {
        let url = testbed.payment_url().ok_or(FaultError::NotRunning { target: Target::Payment })?;
        let before = self.payment_control(&url, None).await?;
        let after = self.payment_control(&url, Some(&update)).await?;
        let now = self.payment_control(&url, None).await?;
        let took = update.as_object().into_iter().flatten().all(|(k, v)| now.get(k) == Some(v));
        let check = Check::new(took && now == after, format!("GET /control: {now}"));
        Ok((Undo::Payment(before), check))
    }

    /// `GET /control`, or `PUT /control` with `body`; the behaviour it answers.
    pub(super) async fn payment_control(&self, base: &str, body: Option<&Value>) -> Result<Value, FaultError> {
        let url = format!("{base}/control");
        let request = match body {
            Some(body) => self.http.put(&url).json(body),
            None => self.http.get(&url),
        };
        let response = request.send().await.map_err(|e| FaultError::Payment(format!("{url}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| FaultError::Payment(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(FaultError::Payment(format!("{url} answered {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| FaultError::Payment(format!("{url}: {e}: {text}")))
    }
}
