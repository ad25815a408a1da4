"""The IKEv2 VPN for teacher iPads as data: a validated model rendering Apple's com.apple.vpn.managed payload.

Always-on here means what iOS 14+ offers to non-supervised and supervised devices alike: VPN On
Demand with a single `Connect` rule plus `IncludeAllNetworks`, so no traffic leaves outside the
tunnel (BSI SYS.3.2.1.A22, NET.3.3.A10: no split tunnelling). Key names and ranges follow Apple's
schema (mdm/profiles/com.apple.vpn.managed.yaml); tests/ipad/test_schema.py validates the rendering.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EncryptionAlgorithm = Literal["AES-256", "AES-256-GCM", "ChaCha20Poly1305"]
IntegrityAlgorithm = Literal["SHA2-256", "SHA2-384", "SHA2-512"]
# Only groups BSI TR-02102-3 still accepts: MODP-3072/4096 (15, 16), ECP-256/384/521 (19, 20, 21),
# Curve25519/448 (31, 32). The weak ones Apple allows (1, 2, 5, 14) are refused by the model.
DHGroup = Literal[15, 16, 19, 20, 21, 31, 32]


class SecurityAssociation(BaseModel):
    """IKE or Child SA parameters (IKESecurityAssociationParameters / ChildSecurityAssociationParameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encryption_algorithm: EncryptionAlgorithm = "AES-256-GCM"
    integrity_algorithm: IntegrityAlgorithm = "SHA2-384"
    diffie_hellman_group: DHGroup = 20
    lifetime_minutes: int = Field(default=1440, ge=10, le=1440)

    def to_payload(self) -> dict[str, Any]:
        return {
            "EncryptionAlgorithm": self.encryption_algorithm,
            "IntegrityAlgorithm": self.integrity_algorithm,
            "DiffieHellmanGroup": self.diffie_hellman_group,
            "LifeTimeInMinutes": self.lifetime_minutes,
        }


class IKEv2Profile(BaseModel):
    """An always-on IKEv2 VPN for iPads.

    auth "EAP": the gateway proves itself with its certificate, the teacher signs in with EAP
    (username and password asked on the device), so the profile carries no secret.
    auth "Certificate": the device uses an identity certificate installed by another payload
    (SCEP/ACME), referenced by `certificate_payload_uuid`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    remote_address: str = Field(min_length=1)
    remote_identifier: str = Field(min_length=1)
    local_identifier: str = Field(min_length=1)
    auth: Literal["EAP", "Certificate"] = "EAP"
    certificate_payload_uuid: str | None = None
    certificate_type: Literal["RSA", "ECDSA256", "ECDSA384", "ECDSA521", "RSA-PSS"] = "ECDSA384"
    server_certificate_issuer_cn: str | None = None
    server_certificate_cn: str | None = None
    always_on: bool = True
    include_all_networks: bool = True
    # Lets AirPrint and the classroom's AirPlay reach local devices while the tunnel is up.
    exclude_local_networks: bool = False
    user_can_disable: bool = False
    dead_peer_detection: Literal["None", "Low", "Medium", "High"] = "Medium"
    enable_pfs: bool = True
    certificate_revocation_check: bool = True
    mtu: int | None = Field(default=None, ge=1280, le=1400)
    ike_sa: SecurityAssociation = SecurityAssociation()
    child_sa: SecurityAssociation = SecurityAssociation(lifetime_minutes=60)

    @model_validator(mode="after")
    def _certificate_needs_identity(self) -> IKEv2Profile:
        if self.auth == "Certificate" and not self.certificate_payload_uuid:
            raise ValueError("auth 'Certificate' needs certificate_payload_uuid (the identity payload)")
        if self.auth == "EAP" and self.certificate_payload_uuid:
            raise ValueError("certificate_payload_uuid is only used with auth 'Certificate'")
        return self

    def ikev2_dict(self) -> dict[str, Any]:
        """The `IKEv2` dictionary of the com.apple.vpn.managed payload."""
        d: dict[str, Any] = {
            "RemoteAddress": self.remote_address,
            "RemoteIdentifier": self.remote_identifier,
            "LocalIdentifier": self.local_identifier,
            "DeadPeerDetectionRate": self.dead_peer_detection,
            "EnablePFS": int(self.enable_pfs),
            "EnableCertificateRevocationCheck": int(self.certificate_revocation_check),
            "IKESecurityAssociationParameters": self.ike_sa.to_payload(),
            "ChildSecurityAssociationParameters": self.child_sa.to_payload(),
        }
        if self.auth == "EAP":
            d["AuthenticationMethod"] = "None"
            d["ExtendedAuthEnabled"] = 1
        else:
            d["AuthenticationMethod"] = "Certificate"
            d["CertificateType"] = self.certificate_type
            d["PayloadCertificateUUID"] = self.certificate_payload_uuid
        if self.server_certificate_issuer_cn:
            d["ServerCertificateIssuerCommonName"] = self.server_certificate_issuer_cn
        if self.server_certificate_cn:
            d["ServerCertificateCommonName"] = self.server_certificate_cn
        if self.always_on:
            d["OnDemandEnabled"] = 1
            d["OnDemandRules"] = [{"Action": "Connect"}]
            d["OnDemandUserOverrideDisabled"] = int(not self.user_can_disable)
        if self.include_all_networks:
            d["IncludeAllNetworks"] = 1
            d["ExcludeLocalNetworks"] = int(self.exclude_local_networks)
        if self.mtu is not None:
            d["MTU"] = self.mtu
        return d

    def to_payload_content(self) -> dict[str, Any]:
        """The payload keys of com.apple.vpn.managed, without the common Payload* keys."""
        return {"VPNType": "IKEv2", "UserDefinedName": self.name, "IKEv2": self.ikev2_dict()}
