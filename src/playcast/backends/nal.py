"""H.264's bitstream, as MediaCodec hands it over: NAL units (Annex B start
codes) and the picture size a sequence parameter set declares (ITU-T H.264
7.3.2.1.1). Pure functions, no I/O: the Android backend reads the phone's
stream with them, and the fake phone checks what it sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final


class ProtocolError(ValueError):
    """The device sent something the pinned scrcpy release never sends."""


NAL_SLICE_IDR: Final = 5
NAL_SPS: Final = 7
NAL_PPS: Final = 8


def iter_nals(data: bytes) -> Iterator[bytes]:
    """NAL units of an Annex B buffer, without start codes."""
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        i = data.find(b"\x00\x00\x01", start)
        end = len(data) if i == -1 else i
        # A 4-byte start code's leading zero is not part of the NAL before it.
        while end > start and data[end - 1] == 0:
            end -= 1
        yield data[start:end]


def has_sps(data: bytes) -> bool:
    return any(nal and nal[0] & 0x1F == NAL_SPS for nal in iter_nals(data))


class _Bits:
    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._left = len(rbsp) * 8

    def u(self, n: int) -> int:
        if n > self._left:
            raise ProtocolError("truncated SPS")
        self._left -= n
        return (self._value >> self._left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ProtocolError("bad exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def sps_picture_size(nal: bytes) -> tuple[int, int]:
    """Cropped width and height from an SPS NAL unit (H.264 7.3.2.1.1)."""
    rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
    b = _Bits(rbsp)
    profile_idc = b.u(8)
    b.u(16)  # constraint flags, level_idc
    b.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = b.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = b.u(1)
        b.ue()  # bit_depth_luma_minus8
        b.ue()  # bit_depth_chroma_minus8
        b.u(1)  # qpprime_y_zero_transform_bypass_flag
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = b.ue() + 1
    height_map_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)  # mb_adaptive_frame_field_flag
    b.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if b.u(1):  # frame_cropping_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            unit_x = 2 if chroma_format_idc in (1, 2) else 1
            unit_y = (2 if chroma_format_idc == 1 else 1) * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise ProtocolError("SPS crops the picture away")
    return width, height


def config_picture_size(config: bytes) -> tuple[int, int] | None:
    """The picture size announced by the SPS in a config packet, if it has one."""
    for nal in iter_nals(config):
        if nal and nal[0] & 0x1F == NAL_SPS:
            return sps_picture_size(nal)
    return None
