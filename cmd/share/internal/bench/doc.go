// Package bench is the harness behind `share bench`: it measures the
// client-server and the peer-to-peer mode of share on the same work, with
// real `share serve`, `share peer` and `share get` processes of the same
// binary on loopback, every process capped to the same upload rate so that
// loopback behaves like a network of equal links, and reports each figure
// beside its theoretical lower bound (Kurose and Ross, Computer Networking,
// section 2.5). It reads only what the daemons expose (their CLI output,
// HTTP API and Prometheus metrics); nothing in transfer, server or node
// exists for it.
package bench
