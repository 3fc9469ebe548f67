package monitor_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chromiumPath is Debian's chromium package (`make deps` installs it).
const chromiumPath = "/usr/bin/chromium"

// requireChromium fails, never skips: a dashboard nobody has loaded in a
// browser is not tested.
func requireChromium(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("headless Chromium is needed to test the dashboard (%v): run `make deps` (Debian package chromium)", err)
	}
}

// browser is a headless Chromium driven over the DevTools protocol on
// --remote-debugging-pipe: JSON messages ending in NUL on fds 3 (to
// Chromium) and 4 (from it), so no WebSocket client is needed.
type browser struct {
	t    testing.TB
	cmd  *exec.Cmd
	dir  string   // profile, HOME and log
	log  string   // Chromium's stderr, quoted when something goes wrong
	toCr *os.File // our end of fd 3
	exit chan struct{}

	wmu    sync.Mutex // one message on the pipe at a time
	mu     sync.Mutex
	nextID int
	wait   map[int]chan cdpReply
	errs   []string // uncaught JavaScript exceptions in any page
	closed bool
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type cdpMessage struct {
	ID     int             `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	cdpReply
}

// startBrowser runs Chromium with a window of w×h CSS pixels; it is killed
// (with its renderers, by process group) when the test ends.
func startBrowser(t testing.TB, w, h int) *browser {
	t.Helper()
	requireChromium(t)
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	crIn, toCr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromCr, crOut, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-extensions",
		"--mute-audio", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(dir, "profile"),
		fmt.Sprintf("--window-size=%d,%d", w, h),
		"--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{crIn, crOut} // fds 3 and 4
	cmd.Stdout, cmd.Stderr = logf, logf
	// HOME in the temporary directory keeps Chromium's caches and crash
	// database out of the real home, and puts dir on every command line of
	// its processes, which close relies on.
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v (run `make deps`)", chromiumPath, err)
	}
	crIn.Close()
	crOut.Close()
	logf.Close()
	b := &browser{t: t, cmd: cmd, dir: dir, log: logf.Name(), toCr: toCr, exit: make(chan struct{}), wait: make(map[int]chan cdpReply)}
	go func() {
		_ = cmd.Wait()
		close(b.exit)
	}()
	go b.read(fromCr)
	t.Cleanup(b.close)
	return b
}

// read dispatches replies to their callers and keeps page exceptions.
func (b *browser) read(r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			break
		}
		var m cdpMessage
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil {
			continue
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch := b.wait[m.ID]; ch != nil {
				delete(b.wait, m.ID)
				ch <- m.cdpReply
			}
		} else if m.Method == "Runtime.exceptionThrown" {
			var p struct {
				Details struct {
					Text      string `json:"text"`
					Exception struct {
						Description string `json:"description"`
					} `json:"exception"`
				} `json:"exceptionDetails"`
			}
			_ = json.Unmarshal(m.Params, &p)
			b.errs = append(b.errs, p.Details.Text+" "+p.Details.Exception.Description)
		}
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.closed = true
	for id, ch := range b.wait {
		delete(b.wait, id)
		close(ch)
	}
	b.mu.Unlock()
}

// call sends one DevTools command (to the page of session, or to the
// browser when session is "") and returns its result.
func (b *browser) call(ctx context.Context, session, method string, params any, result any) error {
	ch := make(chan cdpReply, 1)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errors.New("chromium has exited")
	}
	b.nextID++
	id := b.nextID
	b.wait[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	b.wmu.Lock()
	_, err = b.toCr.Write(append(data, 0))
	b.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: chromium has exited", method)
		}
		if r.Error != nil {
			return fmt.Errorf("%s: %s (%d)", method, r.Error.Message, r.Error.Code)
		}
		if result != nil {
			return json.Unmarshal(r.Result, result)
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.wait, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab, attached in flat mode (commands carry its sessionId).
type page struct {
	b       *browser
	session string
}

// open makes a new tab showing url.
func (b *browser) open(url string) *page {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		b.fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		b.fatal(err)
	}
	p := &page{b: b, session: att.SessionID}
	for _, m := range []string{"Runtime.enable", "Page.enable"} {
		if err := b.call(ctx, p.session, m, nil, nil); err != nil {
			b.fatal(err)
		}
	}
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := b.call(ctx, p.session, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		b.fatal(err)
	}
	if nav.ErrorText != "" {
		b.fatal(fmt.Errorf("loading %s: %s", url, nav.ErrorText))
	}
	return p
}

// eval runs expr in the page and decodes its value (returned by value, so
// expressions should produce JSON-able data).
func (p *page) eval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("evaluating: %s %s", r.Exception.Text, r.Exception.Exception.Description)
	}
	return json.Unmarshal(r.Result.Value, out)
}

// screenshot captures the page's viewport as PNG.
func (p *page) screenshot() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var r struct {
		Data string `json:"data"`
	}
	if err := p.b.call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(r.Data)
}

// exceptions lists uncaught JavaScript errors so far.
func (b *browser) exceptions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

func (b *browser) fatal(err error) {
	b.t.Helper()
	b.t.Fatalf("chromium: %v\n%s", err, b.logTail())
}

// logTail is the end of Chromium's stderr, for failure messages.
func (b *browser) logTail() string {
	data, _ := os.ReadFile(b.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// close asks Chromium to quit, then kills its process group whatever
// happened, so no renderer outlives the test.
func (b *browser) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_ = b.call(ctx, "", "Browser.close", nil, nil)
	cancel()
	select {
	case <-b.exit:
	case <-time.After(5 * time.Second):
	}
	pgid := b.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-b.exit:
	case <-time.After(10 * time.Second):
		b.t.Errorf("chromium (pid %d) did not exit", pgid)
	}
	b.toCr.Close()
	// Renderers die with the group; the crash handlers run in sessions of
	// their own and quit once the browser is gone. Wait for all of them,
	// killing by pid any that linger.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := b.processes()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.t.Errorf("chromium processes %v still alive", left)
			return
		}
		if time.Until(deadline) < 7*time.Second {
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processes lists the live processes started for this browser: those
// whose command line names its temporary directory.
func (b *browser) processes() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(b.dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
