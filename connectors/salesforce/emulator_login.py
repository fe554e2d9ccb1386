"""The emulator's login endpoints: SOAP username-password and OAuth client credentials."""

from __future__ import annotations

import base64
import html
import re
import secrets
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.salesforce.emulator_state import EmulatorState

ORG_ID = "00D5g000000SyNcDAE"


def _soap_fault(code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {html.escape(message)}"
        '</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{html.escape(message)}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, status_code=500, media_type="text/xml")


def _soap_element(body: str, name: str) -> str | None:
    # A regex rather than an XML parser: the emulator must not parse untrusted XML with
    # the standard library, and the login envelope has one flat element of each name.
    match = re.search(rf"<(?:\w+:)?{name}>(.*?)</(?:\w+:)?{name}>", body, re.DOTALL)
    return html.unescape(match.group(1)) if match else None


class LoginApi:
    """Hands out sessions to callers with the right credentials."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def new_session(self) -> str:
        """A fresh session id, valid until sessions are expired."""
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
        self.state.sessions.add(token)
        return token

    def _login_refused(self) -> bool:
        if self.state.refused_logins > 0:
            self.state.refused_logins -= 1
            return True
        return False

    async def soap_login(self, request: Request) -> Response:
        """POST /services/Soap/u/{version}: the partner API login."""
        if request.headers.get("soapaction") != "login":
            return _soap_fault("INVALID_OPERATION", "SOAPAction header must be login")
        body = (await request.body()).decode()
        creds = self.state.credentials
        username = _soap_element(body, "username")
        password = _soap_element(body, "password")
        if (
            self._login_refused()
            or username != creds.username
            or password != creds.password + creds.security_token
        ):
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        version = request.path_params["version"]
        server_url = f"{self.state.base_url}/services/Soap/u/{version}/{ORG_ID[:15]}"
        token = self.new_session()
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{self.state.base_url}/services/Soap/m/{version}/{ORG_ID[:15]}"
            "</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
            f"<serverUrl>{server_url}</serverUrl><sessionId>{token}</sessionId>"
            f"<userId>0055g00000SyNcDAAV</userId><userInfo><organizationId>{ORG_ID}"
            f"</organizationId><userName>{html.escape(username or '')}</userName></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(xml, media_type="text/xml")

    async def oauth_token(self, request: Request) -> Response:
        """POST /services/oauth2/token: client-credentials and password grants."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        creds = self.state.credentials
        if grant == "client_credentials":
            basic = request.headers.get("authorization", "").removeprefix("Basic ").strip()
            try:
                client_id, _, secret = base64.b64decode(basic).decode().partition(":")
            except ValueError:
                client_id, secret = "", ""
            ok = (client_id, secret) == (creds.client_id, creds.client_secret)
        elif grant == "password":
            ok = (
                form.get("client_id") == creds.client_id
                and form.get("client_secret") == creds.client_secret
                and form.get("username") == creds.username
                and form.get("password") in (creds.password, creds.password + creds.security_token)
            )
        else:
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
                status_code=400,
            )
        if self._login_refused() or not ok:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "authentication failure"},
                status_code=400,
            )
        return JSONResponse(
            {
                "access_token": self.new_session(),
                "instance_url": self.state.base_url,
                "id": f"{self.state.base_url}/id/{ORG_ID}/0055g00000SyNcDAAV",
                "token_type": "Bearer",
                "issued_at": str(int(self.state.org.now.timestamp() * 1000)),
                "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )
