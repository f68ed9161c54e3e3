package bench

// Replay throughput: what `rulelock verify --replay` and `rulelock replay`
// do, on a log of -replay.entries entries written by the real gateway
// (replay_gen_test.go; generated on first use and cached in the temporary
// directory):
//
//	cd bench && go test -run '^$' -bench Replay -benchtime 1x -count 5 .
//
// Each op is one whole run over the log; decisions/s is the decisions
// replayed divided by the op's wall time.
//
//   - BenchmarkReplayVerify: replay.VerifyDir, the replay half of `verify
//     --replay` (open the log, which checks every frame and the hash chain;
//     check activations, outcomes, approvals and quorums; re-evaluate every
//     decision under its archived bundle). The log must replay clean.
//   - BenchmarkReplayVerifyFull: the whole `verify --replay`: audit.VerifyDir
//     (signatures, Merkle tree, every entry's encoding) then replay.VerifyDir.
//   - BenchmarkReplayWhatIf: `rulelock replay`: open the log, re-evaluate every
//     decision under a candidate policy (the payments policy with a $40,000
//     payee cap instead of $50,000) and report the changes.
//
// workers=1 is the sequential walk; workers=N decodes and evaluates on N
// goroutines (one agent's decisions always in order, on one of them).

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

var replayEntries = flag.Int("replay.entries", 1_000_000, "entries in the replay benchmarks' log")

func replayWorkers() []int {
	if n := runtime.GOMAXPROCS(0); n > 1 {
		return []int{1, n}
	}
	return []int{1}
}

func BenchmarkReplayVerify(b *testing.B) {
	data := replayData(b, *replayEntries)
	reg := replayRegistry(b, data)
	for _, w := range replayWorkers() {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			var decisions int
			var entries int64
			var elapsed time.Duration
			for b.Loop() {
				start := time.Now()
				sum, err := replay.VerifyDir(filepath.Join(data, "log"), replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg, Workers: w})
				elapsed += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if len(sum.Findings) > 0 {
					b.Fatalf("%d findings, first %+v", len(sum.Findings), sum.Findings[0])
				}
				decisions += sum.Decisions
				entries += sum.Entries
			}
			b.ReportMetric(float64(decisions)/elapsed.Seconds(), "decisions/s")
			b.ReportMetric(float64(entries)/elapsed.Seconds(), "entries/s")
			b.ReportMetric(float64(decisions)/float64(b.N), "decisions/op")
		})
	}
}

func BenchmarkReplayVerifyFull(b *testing.B) {
	data := replayData(b, *replayEntries)
	reg := replayRegistry(b, data)
	pub, err := os.ReadFile(filepath.Join(data, "log.pub"))
	if err != nil {
		b.Fatal(err)
	}
	key, err := audit.ParseVerifierKey(strings.TrimSpace(string(pub)))
	if err != nil {
		b.Fatal(err)
	}
	w := runtime.GOMAXPROCS(0)
	var decisions int
	var elapsed time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := audit.VerifyDir(filepath.Join(data, "log"), key, audit.VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
		sum, err := replay.VerifyDir(filepath.Join(data, "log"), replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: reg, Workers: w})
		elapsed += time.Since(start)
		if err != nil || len(sum.Findings) > 0 {
			b.Fatalf("replay: %v %+v", err, sum)
		}
		decisions += sum.Decisions
	}
	b.ReportMetric(float64(decisions)/elapsed.Seconds(), "decisions/s")
}

func BenchmarkReplayWhatIf(b *testing.B) {
	data := replayData(b, *replayEntries)
	src, err := os.ReadFile(filepath.Join("..", "examples", "payments", "payments.rules"))
	if err != nil {
		b.Fatal(err)
	}
	stricter := strings.Replace(string(src), "<= 50000", "<= 40000", 1)
	if stricter == string(src) {
		b.Fatal("the payee cap is not in payments.rules any more")
	}
	cand, err := policy.FromSources([]policy.Source{{Name: "payments.rules", Data: []byte(stricter)}}, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range replayWorkers() {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			var decisions, changed int
			var elapsed time.Duration
			for b.Loop() {
				start := time.Now()
				l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
				if err != nil {
					b.Fatal(err)
				}
				rep, err := replay.WhatIf(l, cand, replay.Options{Workers: w})
				l.Close()
				elapsed += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				decisions += rep.Decisions
				changed = len(rep.Changed)
			}
			b.ReportMetric(float64(decisions)/elapsed.Seconds(), "decisions/s")
			b.ReportMetric(float64(changed), "changed/op")
		})
	}
}

// TestReplayLog checks a small generated log the way the benchmarks use a
// large one: it replays clean, and the traffic has every kind of decision.
func TestReplayLog(t *testing.T) {
	data := replayData(t, 20_000)
	sum, err := replay.VerifyDir(filepath.Join(data, "log"), replay.Options{Bundles: filepath.Join(data, "bundles"), Approvers: replayRegistry(t, data)})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Findings) > 0 {
		t.Fatalf("%d findings, first %+v", len(sum.Findings), sum.Findings[:min(5, len(sum.Findings))])
	}
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	counts := map[string]int{}
	for i := range l.Size() {
		raw, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		key := string(e.Kind)
		switch e.Kind {
		case audit.KindDecision:
			key += " " + e.Decision
			for _, r := range e.Rules {
				if r.Outcome == "deny" {
					key += " " + r.Name
				}
			}
		case audit.KindOutcome:
			key += " " + e.Status
		}
		counts[key]++
	}
	t.Logf("%d entries, %d decisions replayed: %v", l.Size(), sum.Decisions, counts)
	for _, want := range []string{"policy_activation", "decision allow", "decision deny PayeeDailyLimit", "decision deny PaymentsAgentsOnly",
		"decision deny VerifyBeforeBankDetailChange", "decision approved", "decision require_approval", "approval", "outcome ok", "outcome error"} {
		if counts[want] == 0 {
			t.Errorf("no %q entries in the generated log", want)
		}
	}
}
