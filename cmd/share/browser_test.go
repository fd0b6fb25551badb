package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/sharefiles/share/transfer"
	"golang.org/x/sys/unix"
)

// findChromium returns the path of a Chromium or Chrome binary, or skips the
// test: the browser tests need a real browser.
func findChromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium installed (apt-get install chromium): the browser tests drive a real browser")
	return ""
}

// smallDevShm reports whether /dev/shm is missing or too small for
// Chromium's shared memory (a container's default is 64 MiB), in which case
// the browser is told to keep it in files under /tmp instead
// (--disable-dev-shm-usage). Only then: on a machine whose /tmp is a disk,
// every byte a page uploads crosses those files (Mojo's data pipes between
// the browser and its network process live in that memory), and the
// browser spent half again as much CPU per byte (BenchmarkPageUpload: 9.95
// against 6.7 CPU-s per GiB) than a user's browser with /dev/shm does.
func smallDevShm() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil {
		return true
	}
	return uint64(st.Bsize)*st.Blocks < 1<<30
}

// newBrowser starts headless Chromium for the test and returns a tab's
// context. Every action gets timeout at most.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	exe := findChromium(t)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860), chromedp.Flag("disable-dev-shm-usage", smallDevShm()))
	// The page asks before leaving while an upload runs (beforeunload): the
	// test answers "leave", as a user reloading on purpose would. A Basic
	// prompt (seen while Fetch interception is on, see answerPrompt) is
	// answered with promptAnswer: cancelled, as a user who closes it, unless
	// credentials are set.
	var ctx context.Context
	dialogs := func(ev any) {
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		case *fetch.EventRequestPaused:
			go chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		case *fetch.EventAuthRequired:
			answer := &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
			if c := promptAnswer.Load(); c != nil {
				answer = &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: c[0], Password: c[1]}
			}
			go chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: answer})
		}
	}
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithListener(dialogs))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// promptAnswer is what the browser answers to a Basic prompt: nil cancels.
var promptAnswer atomic.Pointer[[2]string]

// answerPrompt runs steps with the browser answering Basic prompts for
// documents under base with creds (user, password), or cancelling them when
// creds is nil, as a user would.
func answerPrompt(t testing.TB, ctx context.Context, base string, creds *[2]string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	promptAnswer.Store(creds)
	yes := true
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &yes,
		Patterns: []*fetch.RequestPattern{{URLPattern: base + "/*", ResourceType: network.ResourceTypeDocument}}}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "with a Basic prompt", 30*time.Second, steps...)
	if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
}

// run runs actions with a timeout, failing the test on error.
func do(t testing.TB, ctx context.Context, what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		html, _ := chromedp.Run(ectx, chromedp.Evaluate[string](`document.querySelector('main')?.innerText`))
		t.Fatalf("%s: %v\npage text:\n%s", what, err, html)
	}
}

// waitJS waits until the JavaScript expression is truthy.
func waitJS(t testing.TB, ctx context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	do(t, ctx, what, timeout+5*time.Second, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
		return err
	}))
}

func evalJS[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// screenshots is where the screenshots go: docs/ with SHARE_SCREENSHOTS=1
// (to refresh the README's pictures), else the test's temp dir.
func screenshots(t testing.TB) string {
	if os.Getenv("SHARE_SCREENSHOTS") != "" {
		dir, _ := filepath.Abs("../../docs/screenshots")
		os.MkdirAll(dir, 0o755)
		return dir
	}
	return t.TempDir()
}

func screenshot(t testing.TB, ctx context.Context, dir, name string) {
	t.Helper()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// login logs in through the page's form.
func login(t testing.TB, ctx context.Context, url, token string) {
	t.Helper()
	answerPrompt(t, ctx, url, nil, chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.ID("login-view")))
	do(t, ctx, "log in", 20*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("shares-view")))
}

// apiGet reads a JSON route with the token.
func apiGet(t testing.TB, base, token, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// ShareJSON is one share of the API's JSON.
type ShareJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type listed struct {
	Shares []struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Type     string `json:"type"`
		Size     int64  `json:"size"`
		Complete bool   `json:"complete"`
	} `json:"shares"`
}

type uploadsListed struct {
	Uploads []struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Have     int    `json:"have"`
		Chunks   int    `json:"chunks"`
		Received int64  `json:"received"`
	} `json:"uploads"`
}

// TestBrowser is issue 12's end-to-end test: a real share serve and real
// share peers, driven by headless Chromium through the page.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("the browser test moves a few hundred MiB through Chromium: run without -short")
	}
	ctx := newBrowser(t)
	shots := screenshots(t)
	// The server receives at most 48 MiB/s, so an upload stays in progress
	// long enough to be seen.
	srv := startServe(t, "", "--download-limit", "48MiB/s")
	files := t.TempDir()

	// Chromium opens the page: it prompts for Basic auth; answered with the
	// token, the page lists the shares (none yet) with nothing more to type.
	answerPrompt(t, ctx, srv.URL, &[2]string{"me", srv.Token}, chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("shares-view")))
	if m, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(location.origin + '/v1/session').then(r => r.json()).then(s => s.method)`,
		chromedp.EvalAwaitPromise)); m != "basic" {
		t.Fatalf("after the Basic prompt the page is authenticated by %q (%v)", m, err)
	}
	// A new browser profile whose user cancels the prompt gets the login form.
	ctx = newBrowser(t)
	answerPrompt(t, ctx, srv.URL, nil, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("login-view")))
	screenshot(t, ctx, shots, "login.png")

	// A wrong token is refused on the form.
	do(t, ctx, "a wrong token", 20*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("login-error")))
	login(t, ctx, srv.URL, srv.Token)

	// The cookie is HttpOnly, SameSite=Strict, and named for the port.
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{srv.URL}})
	if err != nil || len(cookies.Cookies) != 1 {
		t.Fatalf("cookies after login: %+v %v", cookies, err)
	}
	if c := cookies.Cookies[0]; !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || !strings.HasPrefix(c.Name, "share_session_") || c.Value == srv.Token {
		t.Fatalf("login cookie %+v", c)
	}
	// The token is typed once: a reload stays logged in.
	do(t, ctx, "reload after login", 20*time.Second, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("shares-view")))

	// Upload a file and a folder through the page.
	big := filepath.Join(files, "video.bin")
	writeFile(t, big, 96<<20, 21)
	tree := filepath.Join(files, "holiday photos")
	for p, size := range map[string]int64{"a.jpg": 3<<20 + 17, "sub/b.jpg": 1 << 20, "sub/deeper/c.txt": 5, "z.bin": 2<<20 + 3} {
		os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755)
		writeFile(t, filepath.Join(tree, p), size, uint64(size))
	}
	do(t, ctx, "choose a file and a folder", 20*time.Second,
		chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{big}),
		chromedp.SetUploadFiles(chromedp.ID("folder-input"), []string{tree}))
	// Both show in the uploads panel with progress, and in the list.
	waitJS(t, ctx, "uploads in progress", `[...document.querySelectorAll('#uploads li.sending progress')].some(p => p.value > 0) &&
		[...document.querySelectorAll('#shares tbody tr')].some(r => r.innerText.includes('uploading'))`, 30*time.Second)
	screenshot(t, ctx, shots, "uploading.png")
	waitJS(t, ctx, "both uploads done", `document.querySelectorAll('#uploads li.done').length === 2`, 60*time.Second)
	waitJS(t, ctx, "both listed complete", `(() => { const t = document.querySelector('#shares tbody').innerText;
		return t.includes('video.bin') && t.includes('holiday photos.tar') && !t.includes('uploading'); })()`, 10*time.Second)

	var l listed
	apiGet(t, srv.URL, srv.Token, "/v1/shares", &l)
	ids := map[string]string{}
	for _, s := range l.Shares {
		ids[s.Name] = s.ID
		if !s.Complete {
			t.Fatalf("%s not complete", s.Name)
		}
	}
	// The page's uploads give the share IDs `share put` gives (the folder's
	// files are 0644 and its directories 0755, what the page declares).
	for _, name := range []string{"video.bin", "holiday photos"} {
		put := share(t, files, srv.env(), "put", name)
		if put.code != 0 || strings.TrimSpace(put.stdout) != ids[name] {
			t.Fatalf("share put of %s: %q (%s), the page made %s", name, put.stdout, put.stderr, ids[name])
		}
	}

	// Download the file through the page and compare bytes.
	dl := t.TempDir()
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "click the download link", 10*time.Second, chromedp.Click(chromedp.CSS(`a[download="video.bin"]`)))
	waitFile(t, filepath.Join(dl, "video.bin"), 96<<20)
	sameFiles(t, big, filepath.Join(dl, "video.bin"))
	// And the folder as a tar, whose entries are the folder's files.
	do(t, ctx, "click the folder's download link", 10*time.Second, chromedp.Click(chromedp.CSS(`a[download="holiday photos.tar"]`)))
	waitFile(t, filepath.Join(dl, "holiday photos.tar"), -1)
	checkTar(t, filepath.Join(dl, "holiday photos.tar"), tree)

	// Filter and sort.
	do(t, ctx, "filter", 10*time.Second, chromedp.SendKeys(chromedp.ID("filter"), "holiday"))
	if n := evalJS[int](t, ctx, `document.querySelectorAll('#shares tbody tr').length`); n != 1 {
		t.Fatalf("filter 'holiday' shows %d rows", n)
	}
	do(t, ctx, "clear the filter", 10*time.Second,
		chromedp.Evaluate[chromedp.Void](`(() => { const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); })()`),
		chromedp.Click(chromedp.CSS(`th[data-key=size] button`)))
	if first := evalJS[string](t, ctx, `document.querySelector('#shares tbody tr td.name').innerText`); !strings.HasPrefix(first, "video.bin") {
		t.Fatalf("sorted by size, the first row is %q", first)
	}

	// A request from a page of another origin (the same host, another port:
	// the same site, so SameSite does not stop the cookie) is refused, and
	// changes nothing.
	evil := evilOrigin(t, srv.URL)
	do(t, ctx, "open a foreign page", 20*time.Second, chromedp.Navigate(evil))
	waitJS(t, ctx, "the foreign page's request finished", `window.done === true`, 10*time.Second)
	var ups uploadsListed
	apiGet(t, srv.URL, srv.Token, "/v1/uploads", &ups)
	if len(ups.Uploads) != 0 {
		t.Fatalf("a cross-origin POST with the cookie created an upload session: %+v", ups)
	}
	if st := evalJS[int](t, ctx, `window.evilStatus`); st != 0 && st != 403 {
		t.Fatalf("the foreign page's request got %d", st)
	}

	// A name made of look-alikes of "../" is shown escaped, as the server's
	// rule (transfer.DisplayName) writes it.
	spoof := "\uFF0E\uFF0E\uFF0Fetc\uFF0Fpasswd"
	req, _ := http.NewRequest("PUT", srv.URL+"/v1/shares/"+url.PathEscape(spoof), strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload %q: %v %v", spoof, resp, err)
	}
	var spoofed ShareJSON
	json.NewDecoder(resp.Body).Decode(&spoofed)
	resp.Body.Close()
	do(t, ctx, "back to the list", 20*time.Second, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`a[download="video.bin"]`)))
	waitJS(t, ctx, "the look-alike name listed", `document.querySelector('#shares tbody').innerText.includes('\\uFF0E\\uFF0E\\uFF0Fetc\\uFF0Fpasswd')`, 10*time.Second)
	if evalJS[bool](t, ctx, `document.body.innerText.includes('\uFF0F')`) {
		t.Fatal("the page shows a fullwidth solidus unescaped")
	}
	req, _ = http.NewRequest("DELETE", srv.URL+"/v1/shares/"+spoofed.ID, nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %v %v", resp, err)
	}

	// Delete the folder, after confirming.
	do(t, ctx, "reload the list", 20*time.Second, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`a[download="video.bin"]`)))
	do(t, ctx, "delete with confirmation", 20*time.Second,
		chromedp.Click(chromedp.CSS(`tr[data-id="`+ids["holiday photos"]+`"] button.danger`)),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm-ok")))
	waitJS(t, ctx, "row gone", `!document.querySelector('tr[data-id="`+ids["holiday photos"]+`"]')`, 10*time.Second)
	apiGet(t, srv.URL, srv.Token, "/v1/shares", &l)
	if len(l.Shares) != 1 || l.Shares[0].Name != "video.bin" {
		t.Fatalf("after delete: %+v", l.Shares)
	}

	// A reload in the middle of a large upload resumes it: after the same
	// file is chosen again, only the chunks the server lacks are sent.
	resume := filepath.Join(files, "resume.bin")
	const resumeSize = 160 << 20
	writeFile(t, resume, resumeSize, 22)
	do(t, ctx, "choose a large file", 10*time.Second, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{resume}))
	waitUploadPart(t, srv, 4)
	do(t, ctx, "reload in the middle", 20*time.Second, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("shares-view")))
	waitJS(t, ctx, "the interrupted upload is shown", `document.querySelector('#uploads').innerText.includes('Interrupted')`, 10*time.Second)
	// The requests the reload cut are still being read by the server for a
	// moment (what the kernel had buffered for them, at the server's rate),
	// storing chunks, and each adds all its bytes to
	// share_bytes_received_total when it ends. Measure once they have ended,
	// so that what the server holds is final and the bytes counted from here
	// on are those of the resumed upload alone.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if n, _ := metricValue(t, srv, `share_active_transfers{direction="receive"}`); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload requests cut by the reload did not end on the server")
		}
	}
	apiGet(t, srv.URL, srv.Token, "/v1/uploads", &ups)
	if len(ups.Uploads) != 1 || ups.Uploads[0].Have == ups.Uploads[0].Chunks {
		t.Fatalf("after the reload: %+v", ups)
	}
	held := ups.Uploads[0].Received
	before := metric(t, srv, "share_bytes_received_total")
	do(t, ctx, "choose the same file again", 10*time.Second, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{resume}))
	waitJS(t, ctx, "the resumed upload is done", `document.querySelector('#uploads li.done')?.innerText.includes('resumed')`, 60*time.Second)
	sent := metric(t, srv, "share_bytes_received_total") - before
	t.Logf("resume: the server held %d of %d bytes after the reload; %.0f more were sent", held, resumeSize, sent)
	if held == 0 || int64(sent) > resumeSize-held+(8<<20) {
		t.Fatalf("after the reload %.0f bytes were sent; the server held %d of %d", sent, held, resumeSize)
	}
	got := t.TempDir()
	apiGet(t, srv.URL, srv.Token, "/v1/shares", &l)
	for _, s := range l.Shares {
		if s.Name == "resume.bin" {
			if r := share(t, got, srv.env(), "get", s.ID); r.code != 0 {
				t.Fatalf("get resumed share: %s", r.stderr)
			}
		}
	}
	sameFiles(t, resume, filepath.Join(got, "resume.bin"))

	// Dark mode follows the system; a phone gets one card per share.
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "dark list", 10*time.Second, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`a[download="video.bin"]`)))
	if bg := evalJS[string](t, ctx, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(20, 21, 24)" {
		t.Fatalf("dark mode background %s", bg)
	}
	screenshot(t, ctx, shots, "dark.png")
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "phone width", 10*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)),
		chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`a[download="video.bin"]`)))
	if w := evalJS[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
		t.Fatalf("the page is %d px wide on a 390 px phone", w)
	}
	screenshot(t, ctx, shots, "phone.png")
	do(t, ctx, "desktop width", 10*time.Second, chromedp.EmulateViewport(1280, 860))

	// Logout ends the session: the list needs the login again.
	do(t, ctx, "log out", 20*time.Second, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-view")))

	// The status page of a peer: a second peer fetched a share from the
	// first, and shows it with its provider and where its chunks came from.
	seed := startPeer(t, "")
	leech := startPeer(t, "", "--bootstrap", seed.Addrs[0])
	if r := share(t, files, seed.env(), "put", "video.bin"); r.code != 0 {
		t.Fatalf("put on the seed: %s", r.stderr)
	}
	if r := share(t, t.TempDir(), leech.env(), "get", ids["video.bin"]); r.code != 0 {
		t.Fatalf("get on the second peer: %s", r.stderr)
	}
	login(t, ctx, leech.API, leech.Token)
	do(t, ctx, "peer status", 20*time.Second, chromedp.Click(chromedp.ID("tab-status")), chromedp.WaitVisible(chromedp.ID("status-view")))
	waitJS(t, ctx, "status filled", `document.getElementById('peer-id').innerText === `+jsString(leech.ID)+` &&
		document.querySelector('#peer-shares tbody').innerText.includes('video.bin')`, 10*time.Second)
	text := evalJS[string](t, ctx, `document.getElementById('status-view').innerText`)
	chunks := (96 << 20) / transfer.ChunkSizeFor(96<<20)
	if !strings.Contains(text, "complete") || !strings.Contains(text, fmt.Sprintf("%d / 0", chunks)) {
		t.Errorf("status page does not count the %d chunks by origin:\n%s", chunks, text)
	}
	if rt := evalJS[string](t, ctx, `document.getElementById('peer-rt').innerText`); rt == "0 peers" {
		t.Errorf("routing table empty on the status page")
	}
	if prov := evalJS[string](t, ctx, `document.querySelector('#peer-shares tbody td:nth-child(3)').innerText`); prov == "0" {
		t.Errorf("no provider shown:\n%s", text)
	}
	screenshot(t, ctx, shots, "peer-status.png")
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitFile waits for a download to finish: the file exists with size bytes
// (or, with size < 0, any size) and Chromium's .crdownload is gone.
func waitFile(t testing.TB, path string, size int64) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		fi, err := os.Stat(path)
		_, partial := os.Stat(path + ".crdownload")
		if err == nil && os.IsNotExist(partial) && (size < 0 || fi.Size() == size) {
			return
		}
		if time.Now().After(deadline) {
			ents, _ := os.ReadDir(filepath.Dir(path))
			t.Fatalf("download %s did not finish: %v %v", path, err, ents)
		}
	}
}

// checkTar checks that the tar at path holds the files of dir, byte for byte.
func checkTar(t testing.TB, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		rel := strings.TrimPrefix(h.Name, filepath.Base(dir)+"/")
		want, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatalf("tar entry %s: %v", h.Name, err)
		}
		got, _ := io.ReadAll(tr)
		if !bytes.Equal(got, want) {
			t.Fatalf("tar entry %s differs", h.Name)
		}
		n++
	}
	if n != 4 {
		t.Fatalf("tar has %d files, want 4", n)
	}
}

// evilOrigin serves, on another port of the same host, a page that tries to
// create an upload session on target with the browser's cookie (a no-cors
// POST, which needs no preflight), and records the status it saw.
func evilOrigin(t testing.TB, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	page := fmt.Sprintf(`<!doctype html><script>
fetch(%q, {method: 'POST', mode: 'no-cors', credentials: 'include', headers: {'Content-Type': 'text/plain'},
  body: '{"name":"evil","type":"file","files":[{"size":1}]}'})
  .then(r => { window.evilStatus = r.status; window.done = true; }, () => { window.evilStatus = -1; window.done = true; });
</script>`, target+"/v1/uploads")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, page)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// TestBrowserUploadSurvivesCut cuts the page's connections in the middle of
// a large upload: the page (or Chromium itself, resending a request whose
// kept-alive connection broke, which the server answers 409 "held") asks
// the server which chunks it kept and sends only the rest, by itself, and
// the share is byte-identical.
func TestBrowserUploadSurvivesCut(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 160 MiB through Chromium: run without -short")
	}
	ctx := newBrowser(t)
	srv := startServe(t, "", "--download-limit", "48MiB/s")
	px := newCutProxy(t, strings.TrimPrefix(srv.URL, "http://"))
	login(t, ctx, px.URL, srv.Token)
	file := filepath.Join(t.TempDir(), "cut.bin")
	const size = 160 << 20
	writeFile(t, file, size, 23)
	do(t, ctx, "choose the file", 10*time.Second, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{file}))
	waitUploadPart(t, srv, 2)
	if n := px.cut(); n == 0 {
		t.Fatal("no connection to cut")
	}
	waitJS(t, ctx, "the upload is done", `document.querySelector('#uploads li.done') !== null`, 60*time.Second)
	if msg := evalJS[string](t, ctx, `document.querySelector('#uploads li.done').innerText`); !strings.Contains(msg, "Done") {
		t.Fatalf("upload: %s", msg)
	}
	// Sent again after the cut: what each request had in flight past its
	// last whole chunk (1 MiB chunks here), and what the server had yet to
	// read from its socket when the page asked what it held (a few MiB per
	// request), not the 80 MiB it held.
	if got := metric(t, srv, "share_bytes_received_total"); got > size+40<<20 {
		t.Fatalf("the server received %.0f bytes for a %d-byte file: the page sent again what it held", got, size)
	}
	var l listed
	apiGet(t, srv.URL, srv.Token, "/v1/shares", &l)
	if len(l.Shares) != 1 {
		t.Fatalf("shares: %+v", l.Shares)
	}
	out := t.TempDir()
	if r := share(t, out, srv.env(), "get", l.Shares[0].ID); r.code != 0 {
		t.Fatalf("get: %s", r.stderr)
	}
	sameFiles(t, file, filepath.Join(out, "cut.bin"))
}

// waitUploadPart waits until the server's one upload session holds at least
// 1/part of its chunks.
func waitUploadPart(t testing.TB, srv *daemon, part int) {
	t.Helper()
	var ups struct{ Uploads []struct{ Have, Chunks int } }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		apiGet(t, srv.URL, srv.Token, "/v1/uploads", &ups)
		if len(ups.Uploads) == 1 && ups.Uploads[0].Have*part >= ups.Uploads[0].Chunks {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upload did not get 1/%d of its chunks in: %+v", part, ups)
		}
	}
}

// cutProxy forwards TCP connections from its own loopback port to target;
// cut closes every connection it carries, as a lost network would.
type cutProxy struct {
	URL   string
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{URL: "http://" + ln.Addr().String(), conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				dst.Close()
				src.Close()
				p.mu.Lock()
				delete(p.conns, src)
				p.mu.Unlock()
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return p
}

// cut closes every connection in flight and returns how many it closed.
func (p *cutProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	return n
}

// BenchmarkPageUpload compares, in one run, uploading the same 1 GiB file
// to the same share serve from the page (headless Chromium, the file set
// with DOM.setFileInputFiles, until the page says done: the session's
// chunks sent, hashed and written by the server, the share committed) and
// with curl -T (one streamed PUT, hashed as it arrives). Both end with the
// data fsynced. Rounds alternate which goes first; each deletes the share
// after. Reported: MB/s of each (10^6 bytes per second), their ratio, the
// server's CPU seconds per GiB for each, and Chromium's for the page (all its
// processes; SHARE_CPU_BY_TYPE=1 logs them by process type).
//
//	go test -run '^$' -bench PageUpload -benchtime 3x ./cmd/share
func BenchmarkPageUpload(b *testing.B) {
	ctx := newBrowser(b)
	if _, err := exec.LookPath("curl"); err != nil {
		b.Skip("no curl")
	}
	size := int64(1 << 30)
	if s := os.Getenv("SHARE_PAGE_UPLOAD_SIZE"); s != "" {
		fmt.Sscan(s, &size)
	}
	srv := startServe(b, "")
	file := filepath.Join(b.TempDir(), "one-gib.bin")
	writeFile(b, file, size, 42)
	login(b, ctx, srv.URL, srv.Token)

	var pageSecs, curlSecs, pageCPU, curlCPU, browserSecs float64
	deleteAll := func() {
		var l listed
		apiGet(b, srv.URL, srv.Token, "/v1/shares", &l)
		for _, s := range l.Shares {
			req, _ := http.NewRequest("DELETE", srv.URL+"/v1/shares/"+s.ID, nil)
			req.Header.Set("Authorization", "Bearer "+srv.Token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}
	viaCurl := func() {
		cpu := procCPU(b, srv.cmd.Process.Pid)
		start := time.Now()
		out, err := exec.Command("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T", file,
			"-H", "Authorization: Bearer "+srv.Token, srv.URL+"/v1/shares/one-gib.bin").Output()
		if err != nil || string(out) != "201" {
			b.Fatalf("curl -T: %s %v", out, err)
		}
		curlSecs += time.Since(start).Seconds()
		curlCPU += procCPU(b, srv.cmd.Process.Pid) - cpu
		deleteAll()
	}
	viaPage := func() {
		do(b, ctx, "fresh page", 20*time.Second, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("shares-view")))
		cpu := procCPU(b, srv.cmd.Process.Pid)
		start := time.Now()
		do(b, ctx, "choose the file", 10*time.Second, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{file}))
		// With SHARE_CPU_BY_TYPE=1, log Chromium's CPU seconds by process
		// type (browser, network service, renderer, GPU) around the upload.
		byType := func() string {
			if os.Getenv("SHARE_CPU_BY_TYPE") == "" {
				return ""
			}
			out, _ := exec.Command("bash", "-c", `for p in $(pgrep chrom); do t=$(tr '\0' ' ' < /proc/$p/cmdline | grep -o -- '--type=[a-z-]*' | head -1); echo "${t:-browser} $(awk '{print $14+$15}' /proc/$p/stat)"; done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]/100 " s"}'`).Output()
			return string(out)
		}
		before := byType()
		bcpu := browserCPU(b)
		waitJS(b, ctx, "page upload done", `document.querySelector('#uploads li.done') !== null`, 10*time.Minute)
		pageSecs += time.Since(start).Seconds()
		pageCPU += procCPU(b, srv.cmd.Process.Pid) - cpu
		browserSecs += browserCPU(b) - bcpu
		if before != "" {
			b.Logf("chromium CPU by process type, cumulative, before:\n%s\nafter:\n%s", before, byType())
		}
		if msg := evalJS[string](b, ctx, `document.querySelector('#uploads li.done').innerText`); !strings.Contains(msg, "Done") {
			b.Fatalf("page upload: %s", msg)
		}
		deleteAll()
	}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			viaCurl()
			viaPage()
		} else {
			viaPage()
			viaCurl()
		}
	}
	b.StopTimer()
	n := float64(b.N)
	gib := float64(size) / (1 << 30)
	b.ReportMetric(float64(size)*n/pageSecs/1e6, "page-MB/s")
	b.ReportMetric(float64(size)*n/curlSecs/1e6, "curl-MB/s")
	b.ReportMetric(curlSecs/pageSecs, "page/curl")
	b.ReportMetric(pageCPU/n/gib, "page-server-CPU-s/GiB")
	b.ReportMetric(curlCPU/n/gib, "curl-server-CPU-s/GiB")
	b.ReportMetric(browserSecs/n/gib, "page-browser-CPU-s/GiB")
}

// browserCPU returns the CPU seconds used so far by every Chromium process
// (found by name), for the cost of the page's side of an upload.
func browserCPU(t testing.TB) float64 {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var total float64
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.HasPrefix(string(comm), "chrom") {
			total += procCPU(t, pid)
		}
	}
	return total
}

// procCPU returns the user+system CPU seconds process pid has used.
func procCPU(t testing.TB, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the line, in clock ticks (USER_HZ, 100 on Linux).
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var ut, st float64
	fmt.Sscan(fields[11], &ut)
	fmt.Sscan(fields[12], &st)
	return (ut + st) / 100
}
