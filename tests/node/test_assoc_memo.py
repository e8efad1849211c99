"""node/assoc_memo.py: an A-ASSOCIATE-RQ's items are decoded once per distinct request;
what pynetdicom gets from a remembered request is what its own decoder gives."""

from __future__ import annotations

import logging

import pytest
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_items import PresentationContextItemAC
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import build_context, negotiate_as_acceptor

from dicom_deid.node import assoc_memo

SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"]


def request(
    calling: str = "PACS", called: str = "DICOM-DEID", contexts: int = 40, max_length: int = 16384
) -> bytes:
    """An A-ASSOCIATE-RQ as a storescu proposing `contexts` storage SOP classes sends it."""
    primitive = A_ASSOCIATE()
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    proposed = []
    for n, cx in enumerate(AllStoragePresentationContexts[:contexts]):
        context = build_context(cx.abstract_syntax, SYNTAXES)
        context.context_id = 2 * n + 1
        proposed.append(context)
    primitive.presentation_context_definition_list = proposed
    length = MaximumLengthNotification()
    length.maximum_length_received = max_length
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = "1.2.276.0.7230010.3.0.3.6.8"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "OFFIS_DCMTK_368"
    primitive.user_information = [length, uid, version]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def pynetdicoms(data: bytes) -> A_ASSOCIATE_RQ:
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(data)
    return pdu


def summary(primitive: A_ASSOCIATE) -> tuple:
    contexts = [
        (
            cx.context_id,
            cx.abstract_syntax,
            list(cx.transfer_syntax),
            cx.result,
            cx._as_scu,
            cx._as_scp,
            cx.scu_role,
            cx.scp_role,
        )
        for cx in primitive.presentation_context_definition_list
    ]
    user = [(type(item).__name__, vars(item)) for item in primitive.user_information]
    return (
        primitive.calling_ae_title,
        primitive.called_ae_title,
        primitive.application_context_name,
        contexts,
        user,
    )


@pytest.fixture(autouse=True)
def fresh():
    assoc_memo.forget()
    yield
    assoc_memo.forget()


def test_a_repeated_request_gives_what_pynetdicom_decodes():
    data = request()
    first = assoc_memo.decode_associate_rq(data)
    second = assoc_memo.decode_associate_rq(data)
    assert type(first) is A_ASSOCIATE_RQ  # the first one is pynetdicom's own
    assert isinstance(second, assoc_memo.RememberedRQ)
    reference = pynetdicoms(data)
    assert second.encode() == reference.encode()
    assert second.pdu_type == reference.pdu_type == 0x01
    assert summary(second.to_primitive()) == summary(reference.to_primitive())
    assert len(second.to_primitive().presentation_context_definition_list) == 40


def test_fixed_fields_come_from_each_request():
    assoc_memo.decode_associate_rq(request(calling="PACS"))
    other = assoc_memo.decode_associate_rq(request(calling="PACS2", called="OTHER"))
    assert isinstance(other, assoc_memo.RememberedRQ)  # same items, other AE titles
    primitive = other.to_primitive()
    assert (primitive.calling_ae_title, primitive.called_ae_title) == ("PACS2", "OTHER")


def test_other_items_are_not_taken_for_remembered_ones():
    assoc_memo.decode_associate_rq(request(max_length=16384))
    other = assoc_memo.decode_associate_rq(request(max_length=32768))
    assert type(other) is A_ASSOCIATE_RQ
    fewer = assoc_memo.decode_associate_rq(request(contexts=3))
    assert len(fewer.to_primitive().presentation_context_definition_list) == 3


def test_each_association_gets_its_own_contexts():
    data = request()
    assoc_memo.decode_associate_rq(data)
    one = assoc_memo.decode_associate_rq(data).to_primitive()
    one.presentation_context_definition_list[0].transfer_syntax.append("1.2.3.4")
    one.presentation_context_definition_list[1].result = 0x03
    two = assoc_memo.decode_associate_rq(data).to_primitive()
    assert summary(two) == summary(pynetdicoms(data).to_primitive())


def test_the_memo_is_bounded():
    for n in range(assoc_memo._MAX_KEPT + 10):
        assoc_memo.decode_associate_rq(request(max_length=16384 + 2 * n))
    assert len(assoc_memo._memo) == assoc_memo._MAX_KEPT
    # the oldest went first; the newest are remembered
    newest = request(max_length=16384 + 2 * (assoc_memo._MAX_KEPT + 9))
    assert isinstance(assoc_memo.decode_associate_rq(newest), assoc_memo.RememberedRQ)
    oldest = request(max_length=16384)
    assert type(assoc_memo.decode_associate_rq(oldest)) is A_ASSOCIATE_RQ


def test_a_request_whose_decoding_logged_is_decoded_again(monkeypatch):
    """pynetdicom would log the same again for the same bytes: not remembered."""
    original = A_ASSOCIATE_RQ.decode

    def noisy(self, data):
        logging.getLogger("pynetdicom.pdu").error("something about this request")
        original(self, data)

    monkeypatch.setattr(A_ASSOCIATE_RQ, "decode", noisy)
    data = request()
    assoc_memo.decode_associate_rq(data)
    assert type(assoc_memo.decode_associate_rq(data)) is A_ASSOCIATE_RQ
    assert not assoc_memo._memo


def test_an_undecodable_request_raises_as_before_and_is_not_remembered():
    data = bytearray(request())
    data[74 + 4 + 2] ^= 0xFF  # garble the first item's length field region
    truncated = bytes(data[:120])
    with pytest.raises(Exception) as ours:
        assoc_memo.decode_associate_rq(truncated)
    with pytest.raises(Exception) as theirs:
        pynetdicoms(truncated)
    assert type(ours.value) is type(theirs.value)
    assert not assoc_memo._memo


def _answer(rq_data: bytes, supported: list) -> A_ASSOCIATE_AC:
    """The A-ASSOCIATE-AC pynetdicom builds for this request against `supported`."""
    rq = pynetdicoms(rq_data).to_primitive()
    accepted, rejected = negotiate_as_acceptor(
        rq.presentation_context_definition_list, supported, []
    )
    primitive = A_ASSOCIATE()
    primitive.calling_ae_title, primitive.called_ae_title = "PACS", "DICOM-DEID"
    primitive.application_context_name = rq.application_context_name
    primitive.result, primitive.result_source = 0x00, 0x01
    primitive.presentation_context_definition_results_list = accepted + rejected
    length = MaximumLengthNotification()
    length.maximum_length_received = 262144
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"
    role.scu_role, role.scp_role = False, True
    primitive.user_information = [length, uid, role]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return pdu


def test_the_answer_is_encoded_as_pynetdicom_encodes_it():
    data = request(contexts=60)
    supported = []
    for n, cx in enumerate(AllStoragePresentationContexts[:50]):
        # accepted with each of the three syntaxes, one refused for its transfer syntax;
        # the last 10 proposed abstract syntaxes are not supported at all
        syntax = ["1.2.840.10008.1.2.4.70"] if n % 7 == 0 else [SYNTAXES[n % 3]]
        supported.append(build_context(cx.abstract_syntax, syntax))
    pdu = _answer(data, supported)
    results = {
        item.result_reason
        for item in pdu.variable_items
        if isinstance(item, PresentationContextItemAC)
    }
    assert results == {0x00, 0x03, 0x04}
    assert assoc_memo.encode_associate_ac(pdu) == pdu.encode()
    assert assoc_memo.encode_associate_ac(pdu) == pdu.encode()  # syntax bytes remembered
    decoded = A_ASSOCIATE_AC()
    decoded.decode(assoc_memo.encode_associate_ac(pdu))
    assert len(decoded.presentation_context) == 60


def _contexts(result: list) -> list[tuple]:
    return [
        (
            cx.context_id,
            cx.abstract_syntax,
            list(cx.transfer_syntax),
            cx.result,
            cx._as_scu,
            cx._as_scp,
        )
        for cx in result
    ]


def _roles(roles: list) -> list[tuple]:
    return [(r.sop_class_uid, r.scu_role, r.scp_role) for r in roles]


def _supported(count: int = 50, scp_role: bool | None = None) -> list:
    supported = []
    for n, cx in enumerate(AllStoragePresentationContexts[:count]):
        # one in 7 only with a syntax nobody proposes: refused for its transfer syntax
        syntax = "1.2.840.10008.1.2.4.70" if n % 7 == 0 else SYNTAXES[n % 3]
        context = build_context(cx.abstract_syntax, [syntax])
        if scp_role is not None:
            context.scu_role, context.scp_role = True, scp_role
        supported.append(context)
    return supported


def test_a_negotiation_is_remembered_and_gives_what_pynetdicom_gives(monkeypatch):
    from pynetdicom import presentation

    calls = []
    original = presentation.negotiate_as_acceptor

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(presentation, "negotiate_as_acceptor", counted)
    proposed = pynetdicoms(request(contexts=60)).to_primitive()
    proposed = proposed.presentation_context_definition_list
    roles = {AllStoragePresentationContexts[1].abstract_syntax: (True, True)}
    answers = [
        assoc_memo.negotiate_as_acceptor(proposed, _supported(scp_role=True), roles)
        for _ in range(3)
    ]
    assert len(calls) == 1
    reference = original(proposed, _supported(scp_role=True), roles)
    for result, ac_roles in answers:
        assert _contexts(result) == _contexts(reference[0])
        assert _roles(ac_roles) == _roles(reference[1]) != []
    assert {cx.result for cx in answers[0][0]} == {0x00, 0x03, 0x04}
    # each association its own objects
    answers[1][0][0].transfer_syntax.append("1.2.3.4")
    answers[1][0][0].result = 0x01
    again = assoc_memo.negotiate_as_acceptor(proposed, _supported(scp_role=True), roles)
    assert _contexts(again[0]) == _contexts(reference[0])


def test_another_proposal_support_or_role_is_negotiated_anew():
    proposed = pynetdicoms(request(contexts=60)).to_primitive()
    proposed = proposed.presentation_context_definition_list
    first = assoc_memo.negotiate_as_acceptor(proposed, _supported(50), None)
    fewer = assoc_memo.negotiate_as_acceptor(proposed, _supported(20), None)
    assert sum(cx.result == 0 for cx in fewer[0]) < sum(cx.result == 0 for cx in first[0])
    roles = {AllStoragePresentationContexts[1].abstract_syntax: (True, True)}
    with_roles = assoc_memo.negotiate_as_acceptor(proposed, _supported(scp_role=True), roles)
    without = assoc_memo.negotiate_as_acceptor(proposed, _supported(scp_role=True), None)
    assert _roles(with_roles[1]) and not without[1]
    assert len(assoc_memo._negotiated) == 4


def test_install_routes_pynetdicoms_acceptor_negotiation_here():
    from pynetdicom import acse, presentation

    assoc_memo.install()
    try:
        assert acse.negotiate_as_acceptor is assoc_memo.negotiate_as_acceptor
    finally:
        assoc_memo.uninstall()
    assert acse.negotiate_as_acceptor is presentation.negotiate_as_acceptor
