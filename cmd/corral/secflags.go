package main

import (
	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/pki"
)

// securityOptions are a server's TLS files and input limits.
type securityOptions struct {
	tls    pki.Files
	caKey  string
	limits coordinator.Limits
	// metricsToken is --metrics-require-token.
	metricsToken bool
}

func (o *securityOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.tls.CA, "tls-ca", "", "the cluster CA's certificate (corral tls ca create)")
	f.StringVar(&o.tls.Cert, "tls-cert", "", "this server's certificate (corral tls cert create --server ID)")
	f.StringVar(&o.tls.Key, "tls-key", "", "this server's certificate's key")
	f.StringVar(&o.caKey, "tls-ca-key", "", "the CA's key, to sign the certificates of agents that enroll with a join token (optional)")
	metricsTokenFlag(cmd, &o.metricsToken)
	d := coordinator.DefaultLimits()
	o.limits = d
	f.Int64Var(&o.limits.MaxBodyBytes, "max-body", d.MaxBodyBytes, "largest request body, in bytes")
	f.IntVar(&o.limits.MaxHeaderBytes, "max-header-bytes", d.MaxHeaderBytes, "largest request line and headers, in bytes")
	f.IntVar(&o.limits.MaxStreams, "max-streams", d.MaxStreams, "event streams (--follow) one identity may hold open on this server")
	f.Float64Var(&o.limits.Rate, "rate-limit", d.Rate, "requests per second one identity may send to this server, 0 for no limit (servers forwarding for others are not limited)")
	f.IntVar(&o.limits.Burst, "rate-burst", d.Burst, "requests one identity may send at once above --rate-limit (0: twice the rate)")
}

// apply loads the files into cfg.
func (o *securityOptions) apply(cfg *coordinator.Config) error {
	cfg.Limits = o.limits
	cfg.MetricsRequireToken = o.metricsToken
	if !o.tls.Enabled() {
		return nil // Validate says what is missing
	}
	l, err := o.tls.Load()
	if err != nil {
		return err
	}
	cfg.TLS = l
	if o.caKey != "" {
		if cfg.CA, err = pki.LoadCA(o.tls.CA, o.caKey); err != nil {
			return err
		}
	}
	return nil
}
