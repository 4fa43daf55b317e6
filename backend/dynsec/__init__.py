"""Mosquitto's dynamic-security plugin as the fleet's account directory (`AUTH_MODE=dynsec`,
DESIGN 5.1): the control-API client (`admin`), section 4 as roles (`policy`), and the
directory the provisioning and revocation paths call (`directory`)."""
