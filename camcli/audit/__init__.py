"""camcli audit: SpRAy over a whole folder of maps, and sanity checks of the methods themselves."""
