-- revision: 0018
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
)
;
CREATE TABLE provisioning_runs (
	id INTEGER NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	playbook VARCHAR(255) NOT NULL, 
	check_mode BOOLEAN NOT NULL, 
	hosts JSON NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	artifact_dir TEXT, 
	PRIMARY KEY (id)
)
;
CREATE TABLE provisioning_host_results (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	outcome VARCHAR(32) NOT NULL, 
	ok INTEGER NOT NULL, 
	changed INTEGER NOT NULL, 
	failed INTEGER NOT NULL, 
	unreachable INTEGER NOT NULL, 
	reason TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES provisioning_runs (id) ON DELETE CASCADE
)
;
CREATE TABLE vpn_peers (
	id INTEGER NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	public_key VARCHAR(44), 
	address_v4 VARCHAR(64), 
	address_v6 VARCHAR(64), 
	last_address_v4 VARCHAR(64), 
	last_address_v6 VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	key_created_at DATETIME, 
	rotated_at DATETIME, 
	revoked_at DATETIME, 
	revoked_by VARCHAR(128), 
	revocation_reason TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (host), 
	UNIQUE (public_key), 
	UNIQUE (address_v4), 
	UNIQUE (address_v6)
)
;
CREATE TABLE vpn_retired_keys (
	id INTEGER NOT NULL, 
	public_key VARCHAR(44) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	retired_at DATETIME NOT NULL, 
	reason VARCHAR(16) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (public_key)
)
;
CREATE TABLE vpn_gateways (
	id INTEGER NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	public_key VARCHAR(44) NOT NULL, 
	endpoint VARCHAR(255) NOT NULL, 
	config_sha256 VARCHAR(64) NOT NULL, 
	peers INTEGER NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (host)
)
;
CREATE TABLE mdm_devices (
	id INTEGER NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	udid VARCHAR(255) NOT NULL, 
	serial VARCHAR(32), 
	school VARCHAR(64), 
	ipad_group VARCHAR(16), 
	model VARCHAR(64), 
	os_version VARCHAR(32), 
	build_version VARCHAR(32), 
	device_name VARCHAR(255), 
	topic VARCHAR(255), 
	state VARCHAR(16) NOT NULL, 
	enrolled_at DATETIME, 
	checked_out_at DATETIME, 
	last_seen_at DATETIME, 
	token_update_tally INTEGER NOT NULL, 
	awaiting_configuration BOOLEAN, 
	unlock_token BLOB, 
	identity_cert_not_after DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (enrollment_id)
)
;
CREATE TABLE mdm_device_facts (
	id INTEGER NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	kind VARCHAR(64) NOT NULL, 
	at DATETIME NOT NULL, 
	command_uuid VARCHAR(64), 
	value JSON NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_mdm_device_facts_id_kind UNIQUE (enrollment_id, kind)
)
;
CREATE TABLE mdm_commands (
	id INTEGER NOT NULL, 
	command_uuid VARCHAR(64) NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	request_type VARCHAR(64) NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	detail JSON NOT NULL, 
	enqueued_at DATETIME, 
	updated_at DATETIME NOT NULL, 
	not_now_count INTEGER NOT NULL, 
	error_chain JSON NOT NULL, 
	result JSON NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_mdm_commands_uuid_id UNIQUE (command_uuid, enrollment_id)
)
;
CREATE TABLE mdm_webhook_events (
	id INTEGER NOT NULL, 
	event_id VARCHAR(128) NOT NULL, 
	topic VARCHAR(64) NOT NULL, 
	received_at DATETIME NOT NULL, 
	created_at VARCHAR(64) NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	command_uuid VARCHAR(64), 
	status VARCHAR(32), 
	message TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (event_id)
)
;
CREATE TABLE compliance_runs (
	id INTEGER NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	status VARCHAR(16) NOT NULL, 
	scope VARCHAR(16) NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	pid INTEGER NOT NULL, 
	tool_version VARCHAR(32) NOT NULL, 
	inventory_hash VARCHAR(64) NOT NULL, 
	baselines_hash VARCHAR(64) NOT NULL, 
	waivers_hash VARCHAR(64) NOT NULL, 
	prev_hash VARCHAR(64), 
	record_hash VARCHAR(64), 
	summary JSON NOT NULL, 
	rules JSON NOT NULL, 
	devices JSON NOT NULL, 
	error TEXT, timings JSON, 
	PRIMARY KEY (id), 
	UNIQUE (record_hash)
)
;
CREATE TABLE compliance_results (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	device VARCHAR(255) NOT NULL, 
	rule_id VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	evidence TEXT NOT NULL, 
	waiver TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES compliance_runs (id) ON DELETE CASCADE
)
;
CREATE TABLE enrol_users (
	id INTEGER NOT NULL, 
	username VARCHAR(64) NOT NULL, 
	password_hash TEXT NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	active BOOLEAN NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (username)
)
;
CREATE TABLE enrol_user_schools (
	user_id INTEGER NOT NULL, 
	school_id VARCHAR(32) NOT NULL, 
	PRIMARY KEY (user_id, school_id), 
	FOREIGN KEY(user_id) REFERENCES enrol_users (id) ON DELETE CASCADE
)
;
CREATE TABLE enrol_requests (
	id INTEGER NOT NULL, 
	school_id VARCHAR(32) NOT NULL, 
	device_group VARCHAR(16) NOT NULL, 
	purpose TEXT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	created_by VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	decided_by VARCHAR(64), 
	decided_at DATETIME, 
	reason TEXT, 
	profile_uuid VARCHAR(64), 
	PRIMARY KEY (id)
)
;
CREATE TABLE enrol_request_serials (
	id INTEGER NOT NULL, 
	request_id INTEGER NOT NULL, 
	serial VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	reason TEXT, 
	dep_status VARCHAR(16), 
	enrollment_id VARCHAR(128), 
	pending_commands JSON NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(request_id) REFERENCES enrol_requests (id) ON DELETE CASCADE
)
;
CREATE TABLE enrol_dep_profiles (
	id INTEGER NOT NULL, 
	school_id VARCHAR(32) NOT NULL, 
	digest VARCHAR(64) NOT NULL, 
	profile_uuid VARCHAR(64) NOT NULL, 
	defined_at DATETIME NOT NULL, 
	body JSON NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (school_id, digest)
)
;
CREATE TABLE enrol_login_attempts (
	id INTEGER NOT NULL, 
	username VARCHAR(64) NOT NULL, 
	address VARCHAR(64) NOT NULL, 
	at DATETIME NOT NULL, 
	success BOOLEAN NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE TABLE mdm_push_certs (
	id INTEGER NOT NULL, 
	topic VARCHAR(128) NOT NULL, 
	serial VARCHAR(64) NOT NULL, 
	fingerprint_sha256 VARCHAR(64) NOT NULL, 
	subject TEXT NOT NULL, 
	not_before DATETIME NOT NULL, 
	not_after DATETIME NOT NULL, 
	cert_pem TEXT NOT NULL, 
	installed_at DATETIME NOT NULL, 
	installed_by VARCHAR(128) NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE TABLE enrol_ade_attempts (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	address VARCHAR(64) NOT NULL, 
	serial VARCHAR(64) NOT NULL, 
	udid VARCHAR(64) NOT NULL, 
	product VARCHAR(64) NOT NULL, 
	os_version VARCHAR(32) NOT NULL, 
	outcome VARCHAR(16) NOT NULL, 
	status_code INTEGER NOT NULL, 
	reason TEXT NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE TABLE enrol_web_sessions (
	id_hash VARCHAR(64) NOT NULL, 
	username VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME NOT NULL, 
	PRIMARY KEY (id_hash)
)
;
CREATE TABLE app_licences (
	id INTEGER NOT NULL, 
	location VARCHAR(64) NOT NULL, 
	adam_id VARCHAR(32) NOT NULL, 
	pricing_param VARCHAR(16) NOT NULL, 
	serial VARCHAR(32) NOT NULL, 
	event_id VARCHAR(64) NOT NULL, 
	assigned_at DATETIME NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_app_licences_loc_app_serial UNIQUE (location, adam_id, serial)
)
;
CREATE TABLE ipad_activation_lock_escrow (
	id INTEGER NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	serial VARCHAR(32), 
	ciphertext TEXT NOT NULL, 
	key_id VARCHAR(16) NOT NULL, 
	command_uuid VARCHAR(64), 
	stored_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (enrollment_id)
)
;
CREATE TABLE ipad_lost_mode_locations (
	id INTEGER NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	latitude FLOAT NOT NULL, 
	longitude FLOAT NOT NULL, 
	horizontal_accuracy FLOAT, 
	device_timestamp VARCHAR(64) NOT NULL, 
	command_uuid VARCHAR(64), 
	received_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (enrollment_id)
)
;
CREATE TABLE ipad_returns (
	id INTEGER NOT NULL, 
	serial VARCHAR(32) NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	command_uuid VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	reason TEXT, 
	pending_commands JSON NOT NULL, 
	requested_at DATETIME NOT NULL, 
	requested_by VARCHAR(128) NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE TABLE laptop_pending (
	id INTEGER NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	created_at DATETIME NOT NULL, 
	created_by VARCHAR(128) NOT NULL, 
	reason TEXT NOT NULL, 
	attempts INTEGER NOT NULL, 
	not_before DATETIME, 
	last_attempt_at DATETIME, 
	claimed_by VARCHAR(64), 
	last_error TEXT, 
	done_at DATETIME, 
	result TEXT, identity VARCHAR(128), 
	PRIMARY KEY (id)
)
;
CREATE TABLE laptop_presence (
	host VARCHAR(255) NOT NULL, 
	online BOOLEAN NOT NULL, 
	last_handshake_at DATETIME, 
	online_since DATETIME, 
	offline_since DATETIME, 
	endpoint VARCHAR(128), 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (host)
)
;
CREATE TABLE laptop_evidence (
	id INTEGER NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	collected_at DATETIME NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	facts JSON NOT NULL, 
	facts_hash VARCHAR(64) NOT NULL, 
	prev_hash VARCHAR(64), 
	record_hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (record_hash)
)
;
CREATE TABLE "audit_events" (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	action VARCHAR(64) NOT NULL, 
	target TEXT NOT NULL, 
	detail JSON NOT NULL, 
	prev_hash VARCHAR(64), 
	record_hash VARCHAR(64), 
	PRIMARY KEY (id), 
	CONSTRAINT uq_audit_events_record_hash UNIQUE (record_hash)
)
;
CREATE TABLE chain_signatures (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	signed_at DATETIME NOT NULL, 
	statement TEXT NOT NULL, 
	signature TEXT NOT NULL, 
	key_id VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE TABLE appletv_setup (
	serial VARCHAR(32) NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	sent_at DATETIME NOT NULL, 
	airplay_id VARCHAR(32) NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (serial)
)
;
CREATE TABLE classroom_classes (
	id INTEGER NOT NULL, 
	school_id VARCHAR(32) NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	beacon_id INTEGER NOT NULL, 
	updated_by VARCHAR(64) NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (school_id, name), 
	UNIQUE (beacon_id)
)
;
CREATE TABLE classroom_devices (
	class_id INTEGER NOT NULL, 
	serial VARCHAR(32) NOT NULL, 
	role VARCHAR(8) NOT NULL, 
	display_name VARCHAR(32) NOT NULL, 
	PRIMARY KEY (class_id, serial), 
	FOREIGN KEY(class_id) REFERENCES classroom_classes (id) ON DELETE CASCADE
)
;
CREATE TABLE classroom_teachers (
	class_id INTEGER NOT NULL, 
	username VARCHAR(64) NOT NULL, 
	PRIMARY KEY (class_id, username), 
	FOREIGN KEY(class_id) REFERENCES classroom_classes (id) ON DELETE CASCADE
)
;
CREATE TABLE classroom_lessons (
	id INTEGER NOT NULL, 
	class_id INTEGER NOT NULL, 
	school_id VARCHAR(32) NOT NULL, 
	mode VARCHAR(16) NOT NULL, 
	apps JSON NOT NULL, 
	starts_at DATETIME NOT NULL, 
	ends_at DATETIME NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	created_by VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	applied_at DATETIME, 
	lifted_at DATETIME, 
	serials JSON NOT NULL, 
	detail TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(class_id) REFERENCES classroom_classes (id) ON DELETE CASCADE
)
;
CREATE TABLE ipad_ddm_status (
	id INTEGER NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	newest VARCHAR(96) NOT NULL, 
	reported_at DATETIME, 
	items JSON NOT NULL, 
	item_times JSON NOT NULL, 
	read_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (enrollment_id)
)
;
CREATE TABLE mdm_identity_renewals (
	id INTEGER NOT NULL, 
	enrollment_id VARCHAR(255) NOT NULL, 
	serial VARCHAR(32) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	renewals INTEGER NOT NULL, 
	command_uuid VARCHAR(64) NOT NULL, 
	sent_at DATETIME NOT NULL, 
	answered_at DATETIME, 
	next_attempt_at DATETIME, 
	old_fingerprint VARCHAR(64) NOT NULL, 
	old_not_after DATETIME, 
	reason TEXT NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (enrollment_id)
)
;
CREATE TABLE compliance_shards (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	shard INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	work JSON NOT NULL, 
	results JSON, 
	devices JSON, 
	timings JSON, 
	attempts INTEGER NOT NULL, 
	worker VARCHAR(255), 
	finished_at DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_compliance_shards_run_shard UNIQUE (run_id, shard), 
	FOREIGN KEY(run_id) REFERENCES compliance_runs (id) ON DELETE CASCADE
)
;
CREATE TABLE laptop_recovery_keys (
	host VARCHAR(255) NOT NULL, 
	identity VARCHAR(128), 
	device VARCHAR(255), 
	keyslot INTEGER, 
	ciphertext TEXT NOT NULL, 
	key_id VARCHAR(16) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	created_at DATETIME NOT NULL, 
	added_at DATETIME, 
	verified_at DATETIME, 
	checked_at DATETIME, 
	check_result VARCHAR(16), 
	check_detail TEXT, 
	PRIMARY KEY (host)
)
;
CREATE TABLE vuln_snapshots (
	id INTEGER NOT NULL, 
	distro VARCHAR(16) NOT NULL, 
	format VARCHAR(32) NOT NULL, 
	as_of DATETIME NOT NULL, 
	imported_at DATETIME NOT NULL, 
	imported_by VARCHAR(128) NOT NULL, 
	source_sha256 VARCHAR(64) NOT NULL, 
	path TEXT NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	counts JSON NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE TABLE laptop_packages (
	id INTEGER NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	packages JSON NOT NULL, 
	first_seen DATETIME NOT NULL, 
	last_seen DATETIME NOT NULL, 
	PRIMARY KEY (id)
)
;
CREATE INDEX ix_app_licences_serial ON app_licences (serial)
;
CREATE INDEX ix_audit_events_action ON audit_events (action)
;
CREATE INDEX ix_audit_events_at ON audit_events (at)
;
CREATE INDEX ix_chain_signatures_run_id ON chain_signatures (run_id)
;
CREATE INDEX ix_classroom_classes_school_id ON classroom_classes (school_id)
;
CREATE INDEX ix_classroom_devices_serial ON classroom_devices (serial)
;
CREATE INDEX ix_classroom_lessons_class_id ON classroom_lessons (class_id)
;
CREATE INDEX ix_classroom_lessons_ends_at ON classroom_lessons (ends_at)
;
CREATE INDEX ix_classroom_lessons_school_id ON classroom_lessons (school_id)
;
CREATE INDEX ix_classroom_lessons_starts_at ON classroom_lessons (starts_at)
;
CREATE INDEX ix_classroom_lessons_status ON classroom_lessons (status)
;
CREATE INDEX ix_classroom_teachers_username ON classroom_teachers (username)
;
CREATE INDEX ix_compliance_results_device_rule ON compliance_results (device, rule_id)
;
CREATE INDEX ix_compliance_results_run_id ON compliance_results (run_id)
;
CREATE INDEX ix_compliance_runs_status ON compliance_runs (status)
;
CREATE INDEX ix_compliance_shards_run_id ON compliance_shards (run_id)
;
CREATE INDEX ix_enrol_ade_attempts_at ON enrol_ade_attempts (at)
;
CREATE INDEX ix_enrol_ade_attempts_serial ON enrol_ade_attempts (serial)
;
CREATE INDEX ix_enrol_login_attempts_at ON enrol_login_attempts (at)
;
CREATE INDEX ix_enrol_login_attempts_username ON enrol_login_attempts (username)
;
CREATE INDEX ix_enrol_request_serials_request_id ON enrol_request_serials (request_id)
;
CREATE INDEX ix_enrol_request_serials_serial ON enrol_request_serials (serial)
;
CREATE INDEX ix_enrol_requests_school_id ON enrol_requests (school_id)
;
CREATE INDEX ix_enrol_requests_status ON enrol_requests (status)
;
CREATE INDEX ix_enrol_web_sessions_username ON enrol_web_sessions (username)
;
CREATE INDEX ix_ipad_activation_lock_escrow_serial ON ipad_activation_lock_escrow (serial)
;
CREATE INDEX ix_ipad_returns_serial ON ipad_returns (serial)
;
CREATE INDEX ix_laptop_evidence_host_collected ON laptop_evidence (host, collected_at)
;
CREATE UNIQUE INDEX ix_laptop_packages_host_sha ON laptop_packages (host, sha256)
;
CREATE INDEX ix_laptop_pending_host_state ON laptop_pending (host, state)
;
CREATE INDEX ix_laptop_pending_state ON laptop_pending (state)
;
CREATE INDEX ix_mdm_commands_enrollment_id ON mdm_commands (enrollment_id)
;
CREATE INDEX ix_mdm_devices_school ON mdm_devices (school)
;
CREATE INDEX ix_mdm_devices_serial ON mdm_devices (serial)
;
CREATE INDEX ix_mdm_devices_udid ON mdm_devices (udid)
;
CREATE INDEX ix_mdm_identity_renewals_serial ON mdm_identity_renewals (serial)
;
CREATE INDEX ix_mdm_push_certs_topic ON mdm_push_certs (topic)
;
CREATE INDEX ix_provisioning_host_results_run_id ON provisioning_host_results (run_id)
;
CREATE INDEX ix_vpn_peers_status ON vpn_peers (status)
;
CREATE INDEX ix_vpn_retired_keys_host ON vpn_retired_keys (host)
;
CREATE INDEX ix_vuln_snapshots_distro ON vuln_snapshots (distro)
;
