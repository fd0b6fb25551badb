package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// Report writes report.md: the run's setup, its tables, and the classic
// comparison of the two architectures with every row backed by a figure
// from this run.
func Report(w io.Writer, res *Results) {
	m := res.Machine
	fmt.Fprintf(w, "# share bench: client-server against peer-to-peer\n\n")
	fmt.Fprintf(w, "- Command: `%s`\n", res.Command)
	fmt.Fprintf(w, "- Machine: %s, %d cores, %.0f GiB, %s, %s, %s\n", m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go, m.ShareVersion)
	fmt.Fprintf(w, "- Run: %s, %s\n", res.Started.Format(time.RFC3339), time.Duration(res.Elapsed*float64(time.Second)).Round(time.Second))
	if res.emulated() {
		fmt.Fprintf(w, "- Every daemon is a real `share serve` or `share peer` process and every download a real `share get`, each node in a network namespace of its own, joined to the others by a veth pair and a link shaped as the `%s` profile says: %s. Rates are enforced by %s; share's own `--upload-limit` is not used.\n",
			res.Network, linkSummary(res), res.Enforcement)
		fmt.Fprintf(w, "- Rates count whole Ethernet frames, as a line does. The bounds count file bytes: their u_s, u_i and d_i are each link's line rate × %.4f, the TCP payload of a full frame (IPv4, TCP with timestamps: 1448 bytes in 1514), the most any TCP transfer gets from the link; the notes give each bound at line rate too.\n", res.PayloadFraction)
		fmt.Fprintf(w, "- Links: each point's links are sampled every %v (bytes through each shaper, queue backlog, drops, packets lost); the links table says how busy the source's and the downloaders' uplinks were while the downloads ran, and what the delay line cost and how late it was. Its CPU is the emulation's and is not in the cost table's CPU; the samples are in `links/`.\n", sampleEvery)
	} else {
		fmt.Fprintf(w, "- Every daemon is a real `share serve` or `share peer` process on loopback and every download a real `share get`; every upload is capped at %s (download cap: %s), so loopback behaves like a network of equal links.\n",
			rate(res.UploadCap), rate(res.DownloadCap))
	}
	if slices.ContainsFunc(res.Summaries, func(s Summary) bool { return s.Mode == BitTorrent }) {
		fmt.Fprintf(w, "- Reference: BitTorrent, aria2c leechers and an aria2c seeder with a local opentracker, on the same nodes, links, file and N (256 KiB pieces, no DHT, peer exchange on); its time is until the last leecher has every piece verified, and every copy is compared with the source.\n")
	}
	fmt.Fprintf(w, "- Bounds (Kurose and Ross, *Computer Networking*, 2.5): client-server D ≥ max(N·F/u_s, F/d_min); P2P D ≥ max(F/u_s, F/d_min, N·F/(u_s + Σu_i)).\n\n")
	fmt.Fprintf(w, "![distribution time against N](%s)\n\n", ChartSVG)
	fmt.Fprintf(w, "```\n")
	Table(w, res)
	fmt.Fprintf(w, "```\n\n")
	comparison(w, res)
}

// comparison writes the classic table.
func comparison(w io.Writer, res *Results) {
	f := res.Size
	ns := scalingNs(res)
	row := func(aspect, cs, p2p string) {
		fmt.Fprintf(w, "| %s | %s | %s |\n", aspect, strings.ReplaceAll(cs, "|", "/"), strings.ReplaceAll(p2p, "|", "/"))
	}
	fmt.Fprintf(w, "## The classic comparison, measured\n\n| | client-server | peer-to-peer |\n|---|---|---|\n")
	row("Architecture", "one server holds the file; N clients download it from the server alone",
		"a seed and N peers on a private Kademlia DHT; every peer downloads from all holders and uploads what it has")
	if len(ns) > 0 {
		lo, hi := ns[0], ns[len(ns)-1]
		csLo, _ := res.summary(ScenarioScaling, "", ClientServer, lo)
		csHi, _ := res.summary(ScenarioScaling, "", ClientServer, hi)
		pLo, _ := res.summary(ScenarioScaling, "", P2P, lo)
		pHi, _ := res.summary(ScenarioScaling, "", P2P, hi)
		row("Control",
			fmt.Sprintf("the server decides what exists and who may read it (a bearer token); after N=%d downloads, 1 machine can serve the file", hi),
			fmt.Sprintf("whoever holds a share serves it and announces it; after N=%d downloads, %d machines can serve the file", hi, hi+1))
		row("Scalability",
			fmt.Sprintf("N=%d: %s, N=%d: %s (%.1fx longer; the bound grows as N·F/u_s: %.2fx of it at N=%d)", lo, secs(csLo.Median), hi, secs(csHi.Median), csHi.Median/csLo.Median, csHi.Ratio, hi),
			fmt.Sprintf("N=%d: %s, N=%d: %s (%.1fx; the bound stays near F/u_s: %.2fx of it at N=%d)", lo, secs(pLo.Median), hi, secs(pHi.Median), pHi.Median/pLo.Median, pHi.Ratio, hi))
	}
	var csF, pF, pR string
	for _, p := range res.points(ScenarioFault, "half", ClientServer) {
		csF = fmt.Sprintf("server killed at half the file: %d/%d finished without it; all done %s after it came back", p.Fault.FinishedWithout, p.Fault.PendingAtKill, secs(p.Fault.AfterReturn))
	}
	for _, p := range res.points(ScenarioFault, "half", P2P) {
		pF = fmt.Sprintf("seed killed at half the file: %d/%d finished without it", p.Fault.FinishedWithout, p.Fault.PendingAtKill)
		if p.Fault.FinishedWithout < p.Fault.PendingAtKill {
			pF += fmt.Sprintf(" (the swarm had not yet received every chunk from it); all done %s after it came back", secs(p.Fault.AfterReturn))
		}
	}
	for _, p := range res.points(ScenarioFault, "replicated", P2P) {
		pR = fmt.Sprintf("; seed killed once a first copy was complete: the other %d/%d finished without it", p.Fault.FinishedWithout, p.Fault.PendingAtKill)
	}
	if csF != "" || pF != "" {
		row("Reliability", "a single point of failure: "+csF, pF+pR)
	}
	var csB, pB string
	for _, p := range res.points(ScenarioBadPeer, "", ClientServer) {
		csB = fmt.Sprintf("one party to trust; a chunk corrupted on the server's disk: %d/%d clients refused it and kept nothing unverified", p.Refused, p.N)
	}
	for _, p := range res.points(ScenarioBadPeer, "", P2P) {
		pB = fmt.Sprintf("any peer may lie; one serving a corrupted copy: %d bad chunks detected and dropped, %d/%d copies byte-identical, in %s", p.BadChunks, p.Identical, p.N, secs(p.Distribution))
	}
	for _, p := range res.points(ScenarioSecurity, "", ClientServer) {
		if s := p.Security; s != nil {
			csB = strings.TrimPrefix(csB+"; ", "; ") + fmt.Sprintf("a wrong token obtained %d bytes; a stolen token %s until the server was restarted with a new one, %d bytes after",
				s.WrongTokenBytes, humanize.IBytes(uint64(s.StolenBefore)), s.StolenAfter)
		}
	}
	for _, p := range res.points(ScenarioSecurity, "", P2P) {
		if s := p.Security; s != nil {
			pB = strings.TrimPrefix(pB+"; ", "; ") + fmt.Sprintf("in a private swarm (swarm key), an outsider without the key obtained %d bytes and joined no routing table; a lying member's %d bad chunks were dropped, %d/%d copies identical",
				s.OutsiderBytes, p.BadChunks, p.Identical, p.N)
		}
	}
	for _, p := range res.points(ScenarioSecurity, VariantFlood, P2P) {
		if s := p.Security; s != nil && s.Flood != nil {
			pB = strings.TrimPrefix(pB+"; ", "; ") + describeFlood(p, res, true)
		}
	}
	if csB != "" || pB != "" {
		row("Security", csB, pB)
	}
	if len(ns) > 0 {
		hi := ns[len(ns)-1]
		var cs, pp Point
		for _, p := range res.points(ScenarioScaling, "", "") {
			if p.N == hi && p.Mode == ClientServer && cs.N == 0 {
				cs = p
			}
			if p.N == hi && p.Mode == P2P && pp.N == 0 {
				pp = p
			}
		}
		share := 0.0
		if t := pp.SourceUpload + pp.PeerUpload; t > 0 {
			share = 100 * float64(pp.PeerUpload) / float64(t)
		}
		row("Resource sharing",
			fmt.Sprintf("N=%d: the server uploaded %s (%s), the clients nothing", hi, humanize.IBytes(uint64(cs.SourceUpload)), copies(cs.SourceUpload, f)),
			fmt.Sprintf("N=%d: the seed uploaded %s (%s), the peers %s (%.0f%% of all uploads)", hi, humanize.IBytes(uint64(pp.SourceUpload)), copies(pp.SourceUpload, f), humanize.IBytes(uint64(pp.PeerUpload)), share))
	}
	for _, p := range res.points(ScenarioChurn, "", P2P) {
		clean := ""
		if s, ok := res.summary(ScenarioScaling, "", P2P, p.N); ok && s.Median > 0 && p.Distribution > 0 {
			clean = fmt.Sprintf(", against %.2f s when they stay", s.Median)
		}
		row("Churn", "clients never upload: leaving changes nothing",
			fmt.Sprintf("N=%d, every peer leaving as soon as it finished: all done in %s (%s the bound)%s", p.N, secs(p.Distribution), ratio(p.Ratio), clean))
	}
	fmt.Fprintln(w)
}
