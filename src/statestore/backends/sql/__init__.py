"""What the SQL backends share: the tables, the migrations runner, the driver
adapters' protocol and the normalized backend's SQL."""
