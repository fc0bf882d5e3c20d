//! Fan-out: `for_each` with `max_parallel` and `join`, and `parallel:` branches, against real
//! processes: concurrency, results in item order, unmixed logs, cancellation of siblings (their
//! process groups gone), the join policies, and resume after a kill -9 mid-loop.

use crate::harness::*;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

fn statuses(result: &Value) -> Vec<String> {
    result["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {result:#}"))
        .iter()
        .map(|o| o["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn eight_items_four_at_a_time_finish_out_of_order_with_results_in_item_order_and_unmixed_logs() {
    let ws = Ws::new();
    // Item i sleeps d_i in four pieces, printing a line between them: slow items started first
    // finish last. Item a (started first, beside b) also waits for b to be done, so "out of
    // order" holds however the machine schedules them.
    ws.script(
        "work.sh",
        "#!/bin/sh\nname=$1; d=$2\necho \"start $name\" >> events.log\nfor i in 1 2 3 4; do echo \"$name line $i\"; sleep $d; done\nif [ \"$name\" = a ]; then while ! grep -qx b done.log 2>/dev/null; do sleep 0.05; done; fi\necho \"end $name\" >> events.log\necho \"$name\" >> done.log\necho \"$name done\"\n",
    );
    ws.workflow(
        r#"name: fan
steps:
  - name: Each
    for_each:
      items: [["a", "0.4"], ["b", "0.1"], ["c", "0.3"], ["d", "0.05"], ["e", "0.35"], ["f", "0.15"], ["g", "0.25"], ["h", "0.2"]]
      as: it
      max_parallel: 4
      steps:
        - name: Work
          command: ["./work.sh", "${it.0}", "${it.1}"]
  - name: After
    command: ["echo", "${steps.Each.succeeded}/${steps.Each.total} last=${steps.Work.output}"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok().stderr_has("[Each #3] ✓ Work (");
    let each = run.step("Each");
    assert_eq!(each["status"], "succeeded");
    assert_eq!(each["succeeded"], 8);
    assert_eq!(each["failed"], 0);
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for (i, name) in names.iter().enumerate() {
        let outcome = &each["results"][i];
        assert_eq!(outcome["index"], i, "{outcome:#}");
        assert_eq!(
            outcome["item"][0], *name,
            "results are in item order: {each:#}"
        );
        assert_eq!(outcome["status"], "succeeded");
        assert_eq!(outcome["exit_code"], 0);
        assert_eq!(outcome["step"], "Work");
        assert_eq!(
            outcome["output"],
            format!("{name} line 1\n{name} line 2\n{name} line 3\n{name} line 4\n{name} done"),
            "item {name}'s own output, unmixed"
        );
    }
    // They finished out of order.
    let done = lines(&ws, "done.log");
    assert_eq!(done.len(), 8);
    assert_ne!(
        done,
        names.to_vec(),
        "items finished in item order: {done:?}"
    );
    // At most 4 ran at once, and more than one did.
    let (mut running, mut most) = (0, 0);
    for line in lines(&ws, "events.log") {
        if line.starts_with("start") {
            running += 1;
            most = most.max(running);
        } else {
            running -= 1;
        }
    }
    // Concurrency is counted from the items' own start and end lines above, not inferred from
    // how long the loop took (timing belongs to the benchmarks).
    assert!((2..=4).contains(&most), "at most 4 at once, found {most}");
    // After the loop, a body step's result is the last item's, as after a sequential loop.
    assert_eq!(
        run.step("After")["output"],
        "8/8 last=h line 1\nh line 2\nh line 3\nh line 4\nh done"
    );
    // Each item's events carry its lane; its log is a file of its own, shown as one block.
    let lanes: Vec<Value> = run
        .events()
        .iter()
        .filter(|e| e["event"] == "step_finished" && e["step"] == "Work")
        .map(|e| e["lane"].clone())
        .collect();
    assert_eq!(lanes.len(), 8);
    assert!(lanes.iter().all(|l| l[0] == 1), "{lanes:?}");
    let logs = ws.run(&["logs", run.id()]);
    logs.ok();
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for line in logs.stdout.lines() {
        match line.strip_prefix("== ").and_then(|l| l.strip_suffix(" ==")) {
            Some(file) => blocks.push((file.to_string(), Vec::new())),
            None => blocks
                .last_mut()
                .expect("a header first")
                .1
                .push(line.to_string()),
        }
    }
    let work: Vec<&(String, Vec<String>)> = blocks
        .iter()
        .filter(|(f, _)| f.contains("-Work."))
        .collect();
    assert_eq!(work.len(), 8, "one block per item:\n{}", logs.stdout);
    for (i, (file, body)) in work.iter().enumerate() {
        assert_eq!(file, &format!("0001.{i:04}.0001-Work.stdout"));
        let name = names[i];
        let mut expected: Vec<String> = (1..=4).map(|n| format!("{name} line {n}")).collect();
        expected.push(format!("{name} done"));
        assert_eq!(body, &expected, "item {name}'s output is one unmixed block");
    }
}

#[test]
fn all_success_failure_cancels_running_siblings_and_names_the_failing_item() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join("pids")).unwrap();
    ws.workflow(
        r#"name: cancel
steps:
  - name: Each
    for_each:
      items: ["slow1", "bad", "slow2", "later"]
      max_parallel: 3
      steps:
        - name: Work
          command: ["sh", "-c", "echo $$ > pids/${item}; if [ ${item} = bad ]; then sleep 0.5; echo broken >&2; exit 7; fi; sleep 30; touch ${item}.finished"]
  - name: Never
    command: ["touch", "never"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(25));
    run.code(1)
        .stderr_has(
            "step `Each` (line 3) failed: item 1 (`bad`) failed: step `Work` (line 8) failed",
        )
        .stderr_has("2 running cancelled, 1 not started");
    let each = run.step("Each");
    assert_eq!(
        statuses(&each),
        ["cancelled", "failed", "cancelled", "not_started"]
    );
    assert_eq!(each["results"][1]["exit_code"], 7);
    assert_eq!(each["cancelled"], 2);
    // The siblings' processes are gone, and never finished their work.
    for name in ["slow1", "slow2"] {
        let pid: u32 = ws.read(&format!("pids/{name}")).trim().parse().unwrap();
        wait_until(
            "the cancelled sibling to be gone",
            Duration::from_secs(10),
            || !pid_alive(pid),
        );
        assert!(!ws.exists(&format!("{name}.finished")));
    }
    assert!(!ws.exists("pids/later"), "no item starts after the failure");
    assert!(!ws.exists("never"));
}

#[test]
fn any_success_runs_every_item_and_succeeds_when_one_does() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: any
steps:
  - name: Each
    for_each:
      items: [1, 2, 3]
      max_parallel: 2
      join: any_success
      steps:
        - name: Try
          output_capture: json
          command: ["sh", "-c", "touch ran.${item}; if [ ${item} = 2 ]; then echo '{\"answer\": 42}'; else exit 3; fi"]
  - name: Use
    command: ["echo", "${steps.Each.results.1.json.answer} ${steps.Each.succeeded} ${steps.Each.failed}"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    assert_eq!(
        statuses(&run.step("Each")),
        ["failed", "succeeded", "failed"]
    );
    assert_eq!(run.step("Use")["output"], "42 1 2");
    for i in 1..=3 {
        assert!(ws.exists(&format!("ran.{i}")), "item {i} ran");
    }

    // None succeeds: the loop fails and says so.
    ws.workflow(
        r#"name: none
steps:
  - name: Each
    for_each:
      items: [1, 2]
      join: any_success
      steps:
        - name: Try
          command: ["sh", "-c", "exit 3"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.code(1)
        .stderr_has("no item of 2 succeeded (join: any_success)");
    assert_eq!(statuses(&run.step("Each")), ["failed", "failed"]);
}

#[test]
fn all_done_runs_every_item_and_succeeds_with_each_status_recorded() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: done
steps:
  - name: Each
    for_each:
      items: [0, 1, 0, 1]
      max_parallel: 4
      join: all_done
      steps:
        - name: Check
          command: ["sh", "-c", "echo checked; exit ${item}"]
  - name: Count
    command: ["echo", "${steps.Each.failed} failed of ${steps.Each.total}"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    let each = run.step("Each");
    assert_eq!(
        statuses(&each),
        ["succeeded", "failed", "succeeded", "failed"]
    );
    assert_eq!(each["results"][1]["exit_code"], 1);
    assert_eq!(each["results"][1]["output"], "checked");
    assert!(
        each["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("step `Check`")
    );
    assert_eq!(run.step("Count")["output"], "2 failed of 4");
}

#[test]
fn parallel_branches_run_at_once_and_join() {
    let ws = Ws::new();
    // Each branch waits for the other's mark: only branches running at once both succeed.
    let wait = |me: &str, other: &str| {
        format!(
            "[\"sh\", \"-c\", \"touch {me}.ready; i=0; while [ ! -f {other}.ready ]; do i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05; done; echo {me} saw {other}\"]"
        )
    };
    ws.workflow(&format!(
        r#"name: par
steps:
  - name: Checks
    parallel:
      branches:
        lint:
          - name: Lint
            command: {}
        test:
          - name: Build
            command: ["echo", "built"]
          - name: Test
            command: {}
  - name: Report
    command: ["echo", "${{steps.Checks.branches.lint.status}} ${{steps.Checks.branches.test.step}} ${{steps.Build.output}}"]
"#,
        wait("lint", "test"),
        wait("test", "lint")
    ));
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.ok();
    let checks = run.step("Checks");
    assert_eq!(checks["succeeded"], 2);
    assert_eq!(checks["branches"]["lint"]["output"], "lint saw test");
    assert_eq!(checks["branches"]["test"]["output"], "test saw lint");
    assert_eq!(run.step("Report")["output"], "succeeded Test built");

    // A failing branch under all_success fails the step, naming the branch.
    ws.workflow(
        r#"name: par-fail
steps:
  - name: Checks
    parallel:
      branches:
        ok:
          - name: Fine
            command: ["true"]
        broken:
          - name: Broken
            command: ["sh", "-c", "exit 4"]
"#,
    );
    run_within(&ws, &["run", "wf.yaml"], DEADLINE)
        .code(1)
        .stderr_has("branch `broken` failed: step `Broken`");
    // `graph` draws each branch.
    ws.run(&["graph", "wf.yaml"])
        .ok()
        .stdout_has("subgraph s0_b0 [\"branch ok of Checks\"]")
        .stdout_has("-.->|\"join\"|");
}

#[test]
fn resume_after_kill_9_mid_parallel_loop_reruns_only_unfinished_items() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join("pids")).unwrap();
    // Items 0-2 finish at once; 3-5 block until `release` exists.
    ws.workflow(
        r#"name: crash
steps:
  - name: Each
    for_each:
      items: [0, 1, 2, 3, 4, 5]
      max_parallel: 6
      steps:
        - name: Work
          command: ["sh", "-c", "echo ${item} >> ran.log; echo $$ > pids/${item}; if [ ${item} -ge 3 ]; then while [ ! -f release ]; do sleep 0.05; done; fi; echo ${item} >> done.log; echo out ${item}"]
  - name: After
    command: ["sh", "-c", "echo after >> ran.log"]
"#,
    );
    let mut engine = spawn_run(&ws);
    let id = only_run_id(&ws);
    wait_until("items 0-2 recorded and 3-5 running", DEADLINE, || {
        finished_count(&ws, &id, "Work") == 3 && lines(&ws, "ran.log").len() == 6
    });
    // The engine is gone; stop its orphaned items too (each step is its own process group).
    crash(&mut engine, &pid_from_file(&ws, "pids/3"));
    for i in 4..6 {
        signal_quiet(
            "-KILL",
            &format!("-{}", pid_from_file(&ws, &format!("pids/{i}"))),
        );
    }
    ws.file("release", "");
    let resumed = run_within(&ws, &["resume", &id], DEADLINE);
    resumed.ok();
    let mut ran = lines(&ws, "ran.log");
    ran.sort();
    assert_eq!(
        ran,
        ["0", "1", "2", "3", "3", "4", "4", "5", "5", "after"],
        "finished items are not run again, unfinished ones are"
    );
    let mut done = lines(&ws, "done.log");
    done.sort();
    assert_eq!(done, ["0", "1", "2", "3", "4", "5"]);
    let state = ws.state(&id);
    let each = &state["steps"]["Each"];
    assert_eq!(each["succeeded"], 6);
    for i in 0..6 {
        assert_eq!(each["results"][i]["output"], format!("out {i}"));
    }
    // `report` reads the resumed run's path: the replayed items are on it, once each.
    let report = ws.run(&["report", &id]);
    report
        .ok()
        .stdout_has("✓ every transition follows an edge of the graph");
}

#[test]
fn max_parallel_1_keeps_the_sequential_loop_and_its_records() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: seq
steps:
  - name: Each
    for_each:
      items: [a, b]
      max_parallel: 1
      steps:
        - name: Work
          command: ["sh", "-c", "echo ${item}; [ ${item} = a ]"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], DEADLINE);
    run.code(1).stderr_has("iteration 1 failed: step `Work`");
    let events = run.events();
    assert!(
        events.iter().all(|e| e.get("lane").is_none()),
        "a sequential loop runs inline, with the spec's execution numbers"
    );
    let execs: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "step_finished" && e["step"] == "Work")
        .map(|e| e["exec"].as_u64().unwrap())
        .collect();
    assert_eq!(execs, [2, 3]);
    assert!(ws.exists(&format!(
        ".orchestrate/runs/{}/logs/0003-Work.stdout",
        run.id()
    )));
    let each = run.step("Each");
    assert_eq!(each["iterations"], 1);
    assert_eq!(statuses(&each), ["succeeded", "failed"]);
}

/// Starts `orchestrate run wf.yaml --quiet` in the background.
fn spawn_run(ws: &Ws) -> std::process::Child {
    ws.cmd(&["run", "wf.yaml", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `step_finished` records of `step` so far (whole lines only: the run is still writing).
fn finished_count(ws: &Ws, id: &str, step: &str) -> usize {
    std::fs::read_to_string(ws.run_dir(id).join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "step_finished" && e["step"] == step)
        .count()
}

#[test]
fn under_all_done_a_recorded_failure_is_the_items_outcome_on_resume() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join("pids")).unwrap();
    ws.workflow(
        r#"name: crash-done
steps:
  - name: Each
    for_each:
      items: [0, 1, 2]
      max_parallel: 3
      join: all_done
      steps:
        - name: Work
          command: ["sh", "-c", "echo ${item} >> ran.log; echo $$ > pids/${item}; if [ ${item} = 1 ]; then exit 5; fi; if [ ${item} = 2 ]; then while [ ! -f release ]; do sleep 0.05; done; fi"]
"#,
    );
    let mut engine = spawn_run(&ws);
    let id = only_run_id(&ws);
    wait_until("items 0 and 1 recorded, 2 running", DEADLINE, || {
        finished_count(&ws, &id, "Work") == 2 && lines(&ws, "ran.log").len() == 3
    });
    crash(&mut engine, &pid_from_file(&ws, "pids/2"));
    ws.file("release", "");
    run_within(&ws, &["resume", &id], DEADLINE).ok();
    let mut ran = lines(&ws, "ran.log");
    ran.sort();
    assert_eq!(
        ran,
        ["0", "1", "2", "2"],
        "the failed item is not run again"
    );
    let state = ws.state(&id);
    assert_eq!(
        statuses(&state["steps"]["Each"]),
        ["succeeded", "failed", "succeeded"]
    );
}

#[test]
fn status_shows_the_items_running_at_once() {
    let ws = Ws::new();
    ws.workflow(
        r#"name: live
steps:
  - name: Each
    for_each:
      items: [a, b, c]
      max_parallel: 3
      steps:
        - name: Work
          command: ["sh", "-c", "while [ ! -f release ]; do sleep 0.05; done"]
"#,
    );
    let mut engine = spawn_run(&ws);
    let id = only_run_id(&ws);
    let events = ws.run_dir(&id).join("events.jsonl");
    wait_until("three items running", DEADLINE, || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .matches("\"process_started\"")
            .count()
            == 3
    });
    let status = ws.run(&["status", &id]);
    status.ok();
    ws.file("release", "");
    let now = status
        .stdout
        .lines()
        .find(|l| l.starts_with("now: "))
        .unwrap_or_else(|| panic!("no `now:` line\n{}", status.stdout));
    assert!(
        now.starts_with("now: Work (command) in Each (item "),
        "{now}"
    );
    status.stdout_has("running too: Work (exec 1.");
    assert!(engine.wait().unwrap().success());
}

/// The pids the items wrote into `pids/`, once there are `n`.
fn item_pids(ws: &Ws, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until("every item's pid", DEADLINE, || {
        pids = entries(ws, "pids")
            .iter()
            .filter_map(|f| std::fs::read_to_string(ws.join(&format!("pids/{f}"))).ok())
            .filter_map(|t| t.trim().parse().ok())
            .collect();
        pids.len() == n
    });
    pids
}

#[test]
fn a_budget_stops_every_item_running_at_once() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join("pids")).unwrap();
    ws.workflow(
        r#"name: budget
budget:
  max_wall_sec: 1
steps:
  - name: Each
    for_each:
      items: [1, 2, 3]
      max_parallel: 3
      join: all_done
      steps:
        - name: Work
          command: ["sh", "-c", "echo $$ > pids/${item}; sleep 30; touch finished.${item}"]
"#,
    );
    let run = run_within(&ws, &["run", "wf.yaml"], Duration::from_secs(25));
    run.code(1)
        .stderr_has("budget exceeded: max_wall_sec")
        .stderr_has("the items of `Each` still running were stopped");
    for pid in item_pids(&ws, 3) {
        wait_until(
            "the item's process to be gone",
            Duration::from_secs(10),
            || !pid_alive(pid),
        );
    }
    assert!(
        entries(&ws, ".")
            .iter()
            .all(|f| !f.starts_with("finished."))
    );
}

#[test]
fn an_interrupt_stops_every_item_and_resume_finishes_them() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join("pids")).unwrap();
    ws.workflow(
        r#"name: interrupt
steps:
  - name: Each
    for_each:
      items: [1, 2]
      max_parallel: 2
      steps:
        - name: Work
          command: ["sh", "-c", "echo $$ > pids/${item}; while [ ! -f release ]; do sleep 0.05; done; echo ${item} >> done.log"]
"#,
    );
    let mut engine = spawn_run(&ws);
    let pids = item_pids(&ws, 2);
    let id = only_run_id(&ws);
    assert!(signal_quiet("-INT", &engine.id().to_string()));
    let status = engine.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    for pid in pids {
        wait_until(
            "the item's process to be gone",
            Duration::from_secs(10),
            || !pid_alive(pid),
        );
    }
    assert_eq!(ws.state(&id)["status"], "interrupted");
    ws.file("release", "");
    run_within(&ws, &["resume", &id], DEADLINE).ok();
    let mut done = lines(&ws, "done.log");
    done.sort();
    assert_eq!(done, ["1", "2"]);
}

#[test]
fn resume_of_nested_fan_outs_reruns_only_the_unfinished_branch() {
    let ws = Ws::new();
    std::fs::create_dir_all(ws.join("pids")).unwrap();
    ws.workflow(
        r#"name: nested
steps:
  - name: Outer
    for_each:
      items: [a, b]
      as: o
      max_parallel: 2
      steps:
        - name: Inner
          parallel:
            branches:
              one:
                - name: One
                  command: ["sh", "-c", "echo one-${o} >> ran.log"]
              two:
                - name: Two
                  command: ["sh", "-c", "echo two-${o} >> ran.log; echo $$ > pids/${o}; if [ ${o} = b ]; then while [ ! -f release ]; do sleep 0.05; done; fi; echo two ${o}"]
  - name: After
    command: ["sh", "-c", "echo after >> ran.log"]
"#,
    );
    let mut engine = spawn_run(&ws);
    let id = only_run_id(&ws);
    wait_until("all but two-b recorded", DEADLINE, || {
        finished_count(&ws, &id, "One") == 2
            && finished_count(&ws, &id, "Two") == 1
            && finished_count(&ws, &id, "Inner") == 1
            && lines(&ws, "ran.log").len() == 4
    });
    crash(&mut engine, &pid_from_file(&ws, "pids/b"));
    ws.file("release", "");
    run_within(&ws, &["resume", &id], DEADLINE).ok();
    let mut ran = lines(&ws, "ran.log");
    ran.sort();
    assert_eq!(
        ran,
        ["after", "one-a", "one-b", "two-a", "two-b", "two-b"],
        "only the branch that was running runs again"
    );
    let state = ws.state(&id);
    assert_eq!(
        statuses(&state["steps"]["Outer"]),
        ["succeeded", "succeeded"]
    );
    // Nested lanes name their logs by the whole path: Outer (1), item, Inner (1), branch.
    let logs = entries(&ws, &format!(".orchestrate/runs/{id}/logs"));
    assert!(
        logs.iter()
            .any(|l| l.starts_with("0001.0001.0001.0001.0001-Two")),
        "{logs:?}"
    );
}
