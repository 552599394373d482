//! Renders a recorded run directory (a real `kafka-outage` drill at scale 0.3, with the broker
//! killed for 9 s) and checks what the documents hold.

use std::path::Path;

fn recorded_run() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kafka-outage");
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn a_report_holds_the_verdict_one_plot_each_and_the_fault_window() {
    let dir = recorded_run();
    let rendered = reports::render(dir.path()).expect("renders");
    assert_eq!(rendered.outcome, rundir::Outcome::Pass);
    let html = std::fs::read_to_string(&rendered.html).unwrap();
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("verdict.json")).unwrap()).unwrap();
    // The verdict table first, a row per check.
    let table = html.find("id=\"checks\"").expect("verdict table");
    assert!(table < html.find("<svg").expect("inline svg"), "the verdict comes before the plots");
    for check in verdict["checks"].as_array().unwrap() {
        let name = reports::documents::escape(check["name"].as_str().unwrap());
        assert!(html.contains(&name), "row {name} missing");
    }
    // One inline SVG per plot, each with the fault window shaded and labelled.
    for plot in ["latency", "throughput", "stock", "dlq", "breaker", "lag", "processing"] {
        let start = html.find(&format!("id=\"plot-{plot}\"")).unwrap_or_else(|| panic!("plot {plot}"));
        let figure = &html[start..start + html[start..].find("</figure>").unwrap()];
        assert!(figure.contains("#1 kill broker"), "{plot}: the fault window is labelled");
        assert!(figure.contains("<rect"), "{plot}: shaded");
        assert!(dir.path().join(format!("plots/{plot}.svg")).is_file());
        let png = std::fs::read(dir.path().join(format!("plots/{plot}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external asset");
    assert!(html.contains("id=\"timeline\"") && html.contains("fault_start"));
    // Markdown and JUnit.
    let md = std::fs::read_to_string(&rendered.markdown).unwrap();
    assert!(md.starts_with("## ✅ PASS — flashlab drill `kafka-outage`"), "{md}");
    let junit = std::fs::read_to_string(&rendered.junit).unwrap();
    let cases = verdict["checks"].as_array().unwrap().len();
    assert_eq!(junit.matches("<testcase ").count(), cases);
    assert!(junit.contains("failures=\"0\""));
}

#[test]
fn a_failed_check_carries_its_evidence_everywhere() {
    let dir = recorded_run();
    let path = dir.path().join("verdict.json");
    let mut verdict: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    verdict["pass"] = false.into();
    verdict["outcome"] = "fail".into();
    let lost = verdict["checks"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == "lost orders").unwrap();
    lost["outcome"] = "fail".into();
    lost["measured"] = "1 lost".into();
    lost["evidence"] = serde_json::json!(["lg1-42: queued, never decided"]);
    std::fs::write(&path, verdict.to_string()).unwrap();
    let rendered = reports::render(dir.path()).unwrap();
    assert_eq!(rendered.outcome, rundir::Outcome::Fail);
    let html = std::fs::read_to_string(&rendered.html).unwrap();
    assert!(html.contains("class=\"verdict fail\"") && html.contains("lg1-42: queued, never decided"));
    let md = std::fs::read_to_string(&rendered.markdown).unwrap();
    assert!(md.starts_with("## ❌ FAIL"));
    assert!(md.find("**FAIL** | lost orders").unwrap() < md.find("| ok |").unwrap(), "failed rows first");
    assert!(md.contains("- `lg1-42: queued, never decided`"));
    let junit = std::fs::read_to_string(&rendered.junit).unwrap();
    assert!(
        junit.contains("failures=\"1\"") && junit.contains("message=\"FAIL: target 0 of") && junit.contains("lg1-42")
    );
}

#[test]
fn an_inconclusive_check_is_red_and_says_what_was_missing() {
    let dir = recorded_run();
    let path = dir.path().join("verdict.json");
    let mut verdict: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    verdict["pass"] = false.into();
    verdict["outcome"] = "inconclusive".into();
    let row = verdict["checks"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == "availability").unwrap();
    row["outcome"] = "inconclusive".into();
    row["needed"] = "≥ 100 requests".into();
    row["seen"] = "12 requests".into();
    std::fs::write(&path, verdict.to_string()).unwrap();
    let rendered = reports::render(dir.path()).unwrap();
    assert_eq!(rendered.outcome, rundir::Outcome::Inconclusive);
    let html = std::fs::read_to_string(&rendered.html).unwrap();
    assert!(html.contains("class=\"verdict inconclusive\"") && html.contains(">INCONCLUSIVE<"));
    assert!(html.contains("not enough evidence: needs ≥ 100 requests, saw 12 requests"));
    let md = std::fs::read_to_string(&rendered.markdown).unwrap();
    assert!(md.starts_with("## ⚠️ INCONCLUSIVE"), "{md}");
    let junit = std::fs::read_to_string(&rendered.junit).unwrap();
    assert!(junit.contains("failures=\"1\"") && junit.contains("type=\"inconclusive\""), "{junit}");
    assert!(junit.contains("needs ≥ 100 requests, saw 12 requests"));
}

#[test]
fn compare_refuses_other_scenarios_and_counts_a_lost_figure_as_a_regression() {
    let baseline = recorded_run();
    let other = recorded_run();
    let path = other.path().join("verdict.json");
    let mut verdict: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    verdict["scenario"] = "processor-crash".into();
    std::fs::write(&path, verdict.to_string()).unwrap();
    let err = reports::compare_runs(baseline.path(), other.path(), 0.1).unwrap_err().to_string();
    assert!(err.contains("different scenarios"), "{err}");

    let run = recorded_run();
    let path = run.path().join("verdict.json");
    let mut verdict: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    verdict["figures"]["availability_during_faults"] = serde_json::Value::Null;
    verdict["scale"] = 1.0.into();
    std::fs::write(&path, verdict.to_string()).unwrap();
    let c = reports::compare_runs(baseline.path(), run.path(), 0.1).unwrap();
    assert!(c.regressed());
    let row = c.rows.iter().find(|r| r.name == "availability during faults").unwrap();
    assert!(row.regressed, "measured before, missing now");
    assert!(c.notes.iter().any(|n| n.contains("different scale")), "{:?}", c.notes);
    assert!(reports::compare::table(&c).contains("NOTE: different scale"));
}

#[test]
fn a_broken_run_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = reports::render(dir.path()).unwrap_err().to_string();
    assert!(err.contains("verdict.json") && err.contains("No such file"), "{err}");
    let dir = recorded_run();
    std::fs::write(dir.path().join("history.jsonl"), "{\"op\":\"buy\"\n").unwrap();
    let err = reports::render(dir.path()).unwrap_err().to_string();
    assert!(err.contains("history.jsonl:1:"), "{err}");
}

#[test]
fn compare_flags_regressions_past_the_limit_and_newly_failing_checks() {
    let baseline = recorded_run();
    let same = recorded_run();
    let c = reports::compare_runs(baseline.path(), same.path(), 0.10).unwrap();
    assert!(!c.regressed(), "{}", reports::compare::table(&c));

    // The run: p99 of the phase "after" 50% slower, and a check that passed now failing.
    let run = recorded_run();
    let path = run.path().join("load-summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let after = summary["phases"].as_array_mut().unwrap().iter_mut().find(|p| p["name"] == "after").unwrap();
    let p99 = after["corrected"]["p99_ms"].as_f64().unwrap();
    after["corrected"]["p99_ms"] = (p99 * 1.5).into();
    std::fs::write(&path, summary.to_string()).unwrap();
    let path = run.path().join("verdict.json");
    let mut verdict: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let row = verdict["checks"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == "stock conservation").unwrap();
    row["outcome"] = "fail".into();
    std::fs::write(&path, verdict.to_string()).unwrap();

    let c = reports::compare_runs(baseline.path(), run.path(), 0.10).unwrap();
    assert!(c.regressed());
    let regressed: Vec<&str> = c.rows.iter().filter(|r| r.regressed).map(|r| r.name.as_str()).collect();
    assert_eq!(regressed, vec!["p99 after"]);
    assert_eq!(c.newly_failing, vec!["stock conservation".to_string()]);
    // A looser limit lets the latency through, not the failing check.
    let c = reports::compare_runs(baseline.path(), run.path(), 0.60).unwrap();
    assert!(c.rows.iter().all(|r| !r.regressed) && c.regressed());
    let md = std::fs::read_to_string(run.path().join("compare.md")).unwrap();
    assert!(md.contains("❌ regression") && md.contains("- stock conservation"));
    let html = std::fs::read_to_string(run.path().join("compare.html")).unwrap();
    assert!(html.contains("id=\"compare-p99\"") && html.contains("baseline"));
}

/// Headless Chromium (Debian `chromium`, installed by ci/setup) opens `report.html` from disk:
/// its DOM holds the verdict table, and the screenshot of the first screen shows it.
#[test]
fn chromium_shows_the_verdict_table() {
    let dir = recorded_run();
    let rendered = reports::render(dir.path()).unwrap();
    let url = format!("file://{}", rendered.html.display());
    let chromium = |extra: &[&str]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ])
            .args(["--hide-scrollbars", "--window-size=1200,900", "--timeout=20000"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs (ci/setup installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"checks\"") && dom.contains("lost orders"), "the DOM has the verdict table");
    let shot = dir.path().join("screenshot.png");
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1200, 900));
    let step = info.color_type.samples();
    let rgb: Vec<&[u8]> = pixels[..info.buffer_size()].chunks(step).collect();
    // The table's header cells (#f5f5f5) and the PASS verdict's green are on the first screen.
    let header = rgb.iter().filter(|p| p[0] == 245 && p[1] == 245 && p[2] == 245).count();
    let green = rgb.iter().filter(|p| p[1] > 100 && p[0] < 80 && p[2] < 80).count();
    assert!(header > 2_000, "table header pixels: {header}");
    assert!(green > 200, "green PASS pixels: {green}");
}

#[test]
fn the_alerts_table_shows_undetected_faults_first_then_each_alert() {
    let dir = recorded_run();
    let path = dir.path().join("verdict.json");
    let mut verdict: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    verdict["figures"]["undetected_faults"] = serde_json::json!([2]);
    verdict["alerts"] = serde_json::json!([
        {"alert": "CircuitBreakerOpen", "fault": 1, "expected": true, "pending_after_ms": 1000, "fired_after_ms": 6000,
         "notified_after_ms": 9500, "resolved_after_ms": 4000, "outcome": "pass", "note": "fired after 6.0 s"},
        {"alert": "HighErrorRate", "fault": null, "expected": false, "pending_after_ms": null, "fired_after_ms": null,
         "notified_after_ms": null, "resolved_after_ms": null, "outcome": "fail", "note": "false alarm: outside every fault"}
    ]);
    std::fs::write(&path, serde_json::to_string(&verdict).unwrap()).unwrap();
    let rendered = reports::render(dir.path()).expect("renders");
    let html = std::fs::read_to_string(&rendered.html).unwrap();
    let table = &html[html.find("id=\"alerts\"").expect("alerts table")..];
    let table = &table[..table.find("</table>").unwrap()];
    let finding = table.find("#2").expect("the undetected fault");
    let breaker = table.find("CircuitBreakerOpen").expect("the expected alert");
    assert!(finding < breaker, "undetected faults come first: {table}");
    assert!(table.contains("<td>6.0 s</td>") && table.contains("<td>9.5 s</td>"), "fired and notified: {table}");
    assert!(table.contains("unexpected — false alarm: outside every fault"), "{table}");
    let md = std::fs::read_to_string(&rendered.markdown).unwrap();
    assert!(
        md.contains("### Alerts") && md.contains("| ok | CircuitBreakerOpen | #1 | 1.0 s | 6.0 s | 9.5 s | 4.0 s |"),
        "{md}"
    );
}

/// The fixture's monitoring, written as the drill writes it: the breaker alert pending then
/// firing through the broker's outage, notified, resolved.
fn with_alerts(dir: &Path, fired: bool) {
    let (load, fault) = (1796196399801u64, 1796196406571u64);
    let mut records = vec![rundir::AlertRecord::Setup {
        rules: vec!["shipped".into()],
        alertmanager_config: "shipped".into(),
        time_factor: 0.1,
        from_ms: load,
        to_ms: load + 40_000,
        evaluation_rounds: 40,
    }];
    if fired {
        let labels: std::collections::BTreeMap<String, String> =
            [("severity".to_string(), "critical".to_string())].into_iter().collect();
        let state = |state, from_ms, to_ms| rundir::AlertRecord::State {
            alertname: "CircuitBreakerOpen".into(),
            state,
            labels: labels.clone(),
            from_ms,
            to_ms,
        };
        let notice = |status: &str, received_ms| rundir::AlertRecord::Notification {
            received_ms,
            alertname: "CircuitBreakerOpen".into(),
            status: status.into(),
            labels: labels.clone(),
            starts_at: String::new(),
            ends_at: String::new(),
        };
        records.push(state(rundir::AlertPhase::Pending, fault + 1_000, fault + 2_000));
        records.push(state(rundir::AlertPhase::Firing, fault + 3_000, fault + 9_000));
        records.push(notice("firing", fault + 6_000));
        records.push(notice("resolved", fault + 12_000));
    }
    rundir::alerts::write(&dir.join("alerts.jsonl"), &records).unwrap();
}

#[test]
fn the_alert_bands_sit_under_the_plots_on_their_time_axis() {
    let dir = recorded_run();
    with_alerts(dir.path(), true);
    let run = reports::data::load(dir.path()).unwrap();
    let lanes = reports::plots::alerts::lanes(&run);
    assert_eq!(lanes.len(), 1, "{lanes:?}");
    let lane = &lanes[0];
    assert_eq!((lane.alert.as_str(), lane.severity.as_str()), ("CircuitBreakerOpen", "critical"));
    // Seconds since the load started: the fault began 6.77 s in; a stretch holds one evaluation
    // (1 s) past its last.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(close(lane.pending[0].0, 7.77) && close(lane.pending[0].1, 9.77), "{:?}", lane.pending);
    assert!(close(lane.firing[0].0, 9.77) && close(lane.firing[0].1, 16.77), "{:?}", lane.firing);
    assert!(close(lane.notified[0], 12.77) && close(lane.resolved[0], 18.77));

    let rendered = reports::render(dir.path()).expect("renders");
    let html = std::fs::read_to_string(&rendered.html).unwrap();
    let start = html.find("id=\"plot-alerts\"").expect("the alerts plot");
    assert!(start > html.find("id=\"plot-processing\"").unwrap(), "under the time plots");
    let figure = &html[start..start + html[start..].find("</figure>").unwrap()];
    assert!(figure.contains("CircuitBreakerOpen (critical)"), "the lane is named");
    assert!(figure.contains("#1 kill broker"), "the fault window is shaded and labelled");
    // Firing solid and pending light in the critical red; the notice a marker.
    assert!(figure.contains("fill=\"#D32F2F\""), "firing band");
    assert!(figure.matches("<polygon").count() >= 1 && figure.contains("<circle"), "notice markers");
    let png = std::fs::read(dir.path().join("plots/alerts.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // The report says the rules ran scaled, and by how much.
    assert!(html.contains("scaled by a time factor of 0.1"), "the time factor is shown");
    let md = std::fs::read_to_string(&rendered.markdown).unwrap();
    assert!(md.contains("### Alerts") && md.contains("time factor of 0.1"), "{md}");
}

#[test]
fn monitoring_that_saw_nothing_says_so_and_a_run_without_it_has_no_bands() {
    let dir = recorded_run();
    with_alerts(dir.path(), false);
    let html = std::fs::read_to_string(reports::render(dir.path()).unwrap().html).unwrap();
    assert!(html.contains("id=\"plot-alerts\"") && html.contains("no alert was pending or firing"));
    let bare = recorded_run();
    let html = std::fs::read_to_string(reports::render(bare.path()).unwrap().html).unwrap();
    assert!(!html.contains("id=\"plot-alerts\""), "no monitoring, no alerts plot");
}
