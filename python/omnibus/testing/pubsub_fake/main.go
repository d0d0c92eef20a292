// pubsub-fake serves Google's in-memory Pub/Sub fake (pstest) on one address,
// for omnibus.testing.brokers.PubSubFake: a test stand-in for Google Cloud
// Pub/Sub, not an emulator of its limits or its delivery timing.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8085, "port to listen on (0: any free port)")
	flag.Parse()

	srv := pstest.NewServerWithAddress(fmt.Sprintf("%s:%d", *host, *port))
	// The harness waits for this line, then checks readiness with a real RPC.
	fmt.Printf("pubsub-fake listening on %s\n", srv.Addr)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	srv.Close()
}
