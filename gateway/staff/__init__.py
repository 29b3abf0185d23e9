"""The staff area: admin site and login rules, TOTP, security headers, the IP-block page."""
