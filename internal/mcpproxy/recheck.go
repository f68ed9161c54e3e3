package mcpproxy

import (
	"fmt"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Re-checks. An upstream may change a tool's definition without sending
// notifications/tools/list_changed. The proxy lists every upstream's tools
// again every Config.Recheck, and lists a tool's upstream again before the
// first call of each agent session, so that such a change quarantines the
// tool (resync) before that call is forwarded.

// recheckLoop lists every upstream's tools every Config.Recheck until Close.
func (p *Proxy) recheckLoop() {
	defer p.loop.Done()
	tick := time.NewTicker(p.cfg.Recheck)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
			for _, u := range p.ups {
				_ = p.resync(u, false) // logged; the tools keep their last definitions
			}
		}
	}
}

// recheckFirst, on the first call of session ss, lists the tools of t's
// upstream again and returns t as it is now with why it may not be called;
// calls that arrive meanwhile wait for that list, later ones do not (q
// unchanged). An upstream that cannot be listed is an error: the calls
// fail, and the session's next call tries again.
func (p *Proxy) recheckFirst(ss *mcp.ServerSession, t *tool, q *quarantine) (*tool, *quarantine, error) {
	if ss == nil {
		return t, q, nil
	}
	p.mu.Lock()
	rc := p.sessions[ss]
	first := rc == nil
	if first {
		rc = &recheck{done: make(chan struct{})}
		p.sessions[ss] = rc
	}
	p.mu.Unlock()
	if first {
		go func() {
			_ = ss.Wait()
			p.sessionClosed(ss)
		}()
		if rc.err = p.resync(t.Upstream, false); rc.err != nil {
			p.sessionClosed(ss)
		}
		close(rc.done)
	} else {
		select {
		case <-rc.done:
			if rc.err == nil {
				return t, q, nil // re-checked before this call began
			}
		default:
			<-rc.done
		}
	}
	if rc.err != nil {
		return nil, nil, fmt.Errorf("rulelock could not re-check the definition of %s: nothing was done (%v)", t.Qualified, rc.err)
	}
	now, q := p.lookup(t.Qualified)
	if now == nil {
		return t, &quarantine{codeRemoved, fmt.Sprintf("upstream %q no longer lists %s", t.Upstream.cfg.Name, t.Qualified)}, nil
	}
	return now, q, nil
}

// recheck is a session's first re-check: done is closed when it is over.
type recheck struct {
	done chan struct{}
	err  error
}

// sessionClosed forgets a session (recheckFirst).
func (p *Proxy) sessionClosed(ss *mcp.ServerSession) {
	p.mu.Lock()
	delete(p.sessions, ss)
	p.mu.Unlock()
}
