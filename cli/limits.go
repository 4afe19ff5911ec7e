package cli

import (
	"strconv"

	"github.com/custos-pki/custos/internal/ratelimit"
	"github.com/custos-pki/custos/node"
	"github.com/spf13/viper"
)

// limitSettings are the server's load-shedding and rate-limit settings.
// Each is empty by default, meaning node.DefaultLimits.
func limitSettings() []serverSetting {
	def := node.DefaultLimits()
	rate := func(key, flag, what string, l ratelimit.Limit) serverSetting {
		return serverSetting{key, flag, what + " as COUNT/PERIOD[:BURST], or off (default " + l.String() + ")"}
	}
	return []serverSetting{
		{"max_in_flight", "max-in-flight", "requests this node serves at once; past it 503 with Retry-After, 0 for no cap (default " + strconv.Itoa(def.MaxInFlight) + ")"},
		{"max_connections", "max-connections", "open API connections; past it 503 with Retry-After, 0 for no cap (default " + strconv.Itoa(def.MaxConnections) + ")"},
		rate("public_rate_limit", "public-rate-limit", "unauthenticated requests that do work (init, unseal, join, logins) per client address,", def.PublicPerIP),
		rate("acme_rate_requests", "acme-rate-requests", "ACME requests per client address,", def.ACME.RequestsPerIP),
		rate("acme_rate_new_account", "acme-rate-new-account", "new ACME accounts per client address,", def.ACME.NewAccountPerIP),
		rate("acme_rate_new_order", "acme-rate-new-order", "new ACME orders per account,", def.ACME.NewOrderPerAccount),
		rate("acme_rate_new_order_ip", "acme-rate-new-order-ip", "new ACME orders per client address,", def.ACME.NewOrderPerIP),
		rate("acme_rate_failed_validations", "acme-rate-failed-validations", "failed ACME validations per account,", def.ACME.FailedValidationsPerAccount),
		rate("acme_rate_failed_validations_ip", "acme-rate-failed-validations-ip", "failed ACME validations per client address,", def.ACME.FailedValidationsPerIP),
	}
}

// applyLimits reads the limit settings that are set into cfg.Limits.
func applyLimits(v *viper.Viper, cfg *node.Config) error {
	for key, dst := range map[string]*int{"max_in_flight": &cfg.Limits.MaxInFlight, "max_connections": &cfg.Limits.MaxConnections} {
		if s := v.GetString(key); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return usagef("%s: %q is not a whole number from 0", key, s)
			}
			*dst = n
		}
	}
	a := &cfg.Limits.ACME
	for key, dst := range map[string]*ratelimit.Limit{
		"public_rate_limit":               &cfg.Limits.PublicPerIP,
		"acme_rate_requests":              &a.RequestsPerIP,
		"acme_rate_new_account":           &a.NewAccountPerIP,
		"acme_rate_new_order":             &a.NewOrderPerAccount,
		"acme_rate_new_order_ip":          &a.NewOrderPerIP,
		"acme_rate_failed_validations":    &a.FailedValidationsPerAccount,
		"acme_rate_failed_validations_ip": &a.FailedValidationsPerIP,
	} {
		if s := v.GetString(key); s != "" {
			l, err := ratelimit.ParseLimit(s)
			if err != nil {
				return usagef("%s: %v", key, err)
			}
			*dst = l
		}
	}
	return nil
}
