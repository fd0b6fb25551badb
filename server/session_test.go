package server

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// loginCookie logs in through POST /login as the page does and returns
// the cookie.
func loginCookie(t *testing.T, ts *testServer, token string, hdr ...string) (*http.Response, *http.Cookie) {
	t.Helper()
	resp := request(t, "POST", ts.URL+"/login", "", strings.NewReader(url.Values{"token": {token}}.Encode()),
		append([]string{"Content-Type", "application/x-www-form-urlencoded", "Origin", ts.URL, "Accept", "application/json"}, hdr...)...)
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "share_session_") {
			return resp, c
		}
	}
	return resp, nil
}

func TestLogin(t *testing.T) {
	ts := startServer(t, nil, nil)
	withCookie := func(c *http.Cookie) []string { return []string{"Cookie", c.Name + "=" + c.Value} }

	if resp, c := loginCookie(t, ts, "wrong"); resp.StatusCode != http.StatusUnauthorized || c != nil {
		t.Fatalf("wrong token: %d, cookie %v", resp.StatusCode, c)
	} else if resp.Header.Get("WWW-Authenticate") != "" {
		t.Fatal("the login form's 401 carries a challenge: the browser would prompt over the form")
	}
	resp, c := loginCookie(t, ts, testToken)
	if resp.StatusCode != http.StatusNoContent || c == nil {
		t.Fatalf("login: %d, cookie %v", resp.StatusCode, c)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Value == testToken || c.Path != "/" {
		t.Fatalf("cookie %+v", c)
	}
	_, port, _ := strings.Cut(strings.TrimPrefix(ts.URL, "http://"), ":")
	if c.Name != "share_session_"+port {
		t.Fatalf("cookie name %q does not carry the port %s", c.Name, port)
	}

	// The cookie reads, and writes from the page's own origin.
	if r := request(t, "GET", ts.URL+"/v1/shares", "", nil, withCookie(c)...); r.StatusCode != 200 {
		t.Fatalf("list with the cookie: %d", r.StatusCode)
	}
	if r := request(t, "PUT", ts.URL+"/v1/shares/a.txt", "", strings.NewReader("hello"),
		append(withCookie(c), "Origin", ts.URL, "Sec-Fetch-Site", "same-origin")...); r.StatusCode != http.StatusCreated {
		t.Fatalf("upload with the cookie from the page: %d", r.StatusCode)
	}
	// ...but not from a page of another origin...
	for _, hdr := range [][]string{
		{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"},
		{"Origin", "http://127.0.0.1:1", "Sec-Fetch-Site", "same-site"},
		{"Origin", "http://127.0.0.1:1"},
		{"Origin", "null"},
	} {
		r := request(t, "PUT", ts.URL+"/v1/shares/b.txt", "", strings.NewReader("x"), append(withCookie(c), hdr...)...)
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("cookie with %v: %d, want 403", hdr, r.StatusCode)
		}
	}
	// ...while a client that is not a browser (neither Sec-Fetch-Site nor
	// Origin: curl -b) may use the cookie as it may the token.
	if r := request(t, "PUT", ts.URL+"/v1/shares/c.txt", "", strings.NewReader("x"), withCookie(c)...); r.StatusCode != http.StatusCreated {
		t.Errorf("cookie without browser headers: %d, want 201", r.StatusCode)
	}
	// A forged login is refused as well.
	if resp, c2 := loginCookie(t, ts, testToken, "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"); resp.StatusCode != http.StatusForbidden || c2 != nil {
		t.Fatalf("cross-site login: %d", resp.StatusCode)
	}
	// GET /v1/session says who we are.
	r := request(t, "GET", ts.URL+"/v1/session", "", nil, withCookie(c)...)
	if b := string(readBody(t, r)); !strings.Contains(b, `"authenticated": true`) || !strings.Contains(b, `"method": "cookie"`) {
		t.Fatalf("session: %s", b)
	}
	// A made-up cookie is nothing.
	if r := request(t, "GET", ts.URL+"/v1/shares", "", nil, "Cookie", c.Name+"=made-up"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("made-up cookie: %d", r.StatusCode)
	}
	// Logout ends the session on the server, not only in the browser.
	lo := request(t, "POST", ts.URL+"/logout", "", nil, append(withCookie(c), "Origin", ts.URL, "Accept", "application/json")...)
	if lo.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", lo.StatusCode)
	}
	if r := request(t, "GET", ts.URL+"/v1/shares", "", nil, withCookie(c)...); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the cookie still works after logout: %d", r.StatusCode)
	}
	// A restart (a new Server) knows no session.
	_, c3 := loginCookie(t, ts, testToken)
	ts2 := startServer(t, ts.Store, nil)
	_, port2, _ := strings.Cut(strings.TrimPrefix(ts2.URL, "http://"), ":")
	if r := request(t, "GET", ts2.URL+"/v1/shares", "", nil, "Cookie", "share_session_"+port2+"="+c3.Value); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a cookie of another server instance: %d", r.StatusCode)
	}
}

// TestPage: GET / is the page; without a credential it is a 401 that makes a
// browser prompt (Basic) and shows the login form if the prompt is
// cancelled; a script's 401 carries no challenge, so no prompt covers the
// page's own form.
func TestPage(t *testing.T) {
	ts := startServer(t, nil, nil)
	r := request(t, "GET", ts.URL+"/", "", nil)
	body := string(readBody(t, r))
	if r.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Values("WWW-Authenticate")[0], "Basic ") || !strings.Contains(body, `id="login-form"`) {
		t.Fatalf("GET / without token: %d %v", r.StatusCode, r.Header.Values("WWW-Authenticate"))
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	if r := request(t, "GET", ts.URL+"/", testToken, nil); r.StatusCode != 200 {
		t.Fatalf("GET / with the token: %d", r.StatusCode)
	}
	if r := request(t, "GET", ts.URL+"/ui/app.js", "", nil); r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("app.js: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	} else if etag := r.Header.Get("ETag"); etag == "" {
		t.Fatal("no ETag on assets")
	} else if r2 := request(t, "GET", ts.URL+"/ui/app.js", "", nil, "If-None-Match", etag); r2.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: %d", r2.StatusCode)
	}
	if r := request(t, "GET", ts.URL+"/ui/nothing.js", "", nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown asset: %d", r.StatusCode)
	}
	if r := request(t, "GET", ts.URL+"/v1/shares", "", nil, "Sec-Fetch-Mode", "cors"); r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("a script's 401: %d %q", r.StatusCode, r.Header.Get("WWW-Authenticate"))
	}
	pub := startServer(t, nil, func(o *Options) { o.PublicRead = true })
	if r := request(t, "GET", pub.URL+"/", "", nil); r.StatusCode != 200 {
		t.Fatalf("GET / of a public server: %d", r.StatusCode)
	}
	if b := string(readBody(t, request(t, "GET", pub.URL+"/v1/session", "", nil))); !strings.Contains(b, `"public_read": true`) || !strings.Contains(b, `"authenticated": false`) {
		t.Fatalf("public session: %s", b)
	}
}
