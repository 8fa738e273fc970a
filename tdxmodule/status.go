package tdxmodule

import (
	"fmt"
	"maps"
	"slices"
)

// Status is a TDX module completion status as returned in RAX: bits 63:32
// carry the class and code (bit 63 error, 62 non-recoverable, 61 fatal),
// bits 31:0 the operand id or detail. Values are those of the TDX module
// source, include/auto_gen/tdx_error_codes_defs.h (TDX 1.5.01; the Dynamic
// PAMT codes from the 2.0 line).
type Status uint64

// StatusMask selects the code without operand id (Linux
// TDX_SEAMCALL_STATUS_MASK).
const StatusMask Status = 0xFFFFFFFF00000000

// Completion codes.
const (
	Success                    Status = 0x0000000000000000
	InterruptedResumable       Status = 0x8000000300000000
	InterruptedRestartable     Status = 0x8000000400000000
	OperandInvalid             Status = 0xC000010000000000
	OperandAddrRangeError      Status = 0xC000010100000000
	OperandBusy                Status = 0x8000020000000000
	PreviousTLBEpochBusy       Status = 0x8000020100000000
	SysBusy                    Status = 0x8000020200000000
	PageMetadataIncorrect      Status = 0xC000030000000000
	PageAlreadyFree            Status = 0x0000030100000000
	PageNotOwnedByTD           Status = 0xC000030200000000
	PageNotFree                Status = 0xC000030300000000
	HPARangeNotFree            Status = 0xC000030400000000
	NoPAMTPagePair             Status = 0xC000030500000000
	PAMTPageNotEmpty           Status = 0xC000030600000000
	MissingPAMTPagePair        Status = 0x8000030800000000
	TDAssociatedPagesExist     Status = 0xC000040000000000
	SysNotReady                Status = 0xC000050500000000
	TDFatal                    Status = 0xE000060400000000
	TDCSNotAllocated           Status = 0xC000060600000000
	LifecycleStateIncorrect    Status = 0xC000060700000000
	OpStateIncorrect           Status = 0xC000060800000000
	NoVCPUs                    Status = 0xC000060900000000
	TDCXNumIncorrect           Status = 0xC000061000000000
	VCPUStateIncorrect         Status = 0xC000070000000000
	VCPUAssociated             Status = 0x8000070100000000
	VCPUNotAssociated          Status = 0x8000070200000000
	MaxVCPUsExceeded           Status = 0xC000070500000000
	TDKeysNotConfigured        Status = 0x8000081000000000
	KeyStateIncorrect          Status = 0xC000081100000000
	KeyConfigured              Status = 0x0000081500000000
	WBCacheNotComplete         Status = 0x8000081700000000
	HKIDNotFree                Status = 0xC000082000000000
	NoHKIDReadyToWBCache       Status = 0x0000082100000000
	WBCacheResumeError         Status = 0xC000082300000000
	FlushVPNotDone             Status = 0x8000082400000000
	EPTWalkFailed              Status = 0xC0000B0000000000
	EPTEntryNotPresent         Status = 0xC0000B0300000000
	GPARangeNotBlocked         Status = 0xC0000B0600000000
	GPARangeAlreadyBlocked     Status = 0x00000B0700000000
	TLBTrackingNotDone         Status = 0xC0000B0800000000
	EPTInvalidPromoteCondition Status = 0xC0000B0900000000
	PageAlreadyAccepted        Status = 0x00000B0A00000000
	PageSizeMismatch           Status = 0xC0000B0B00000000
	EPTEntryStateIncorrect     Status = 0xC0000B0D00000000
	EPTPageNotFree             Status = 0xC0000B0E00000000
	// SWError is Linux's software-defined class (bit 63, class 0xFF) for a
	// SEAMCALL that faulted; the model returns it for an unknown leaf
	// (TDX_SEAMCALL_VMFAILINVALID).
	SEAMCALLVMFailInvalid Status = 0x8000FF00FFFF0000
)

// Operand ids (low 32 bits of a status).
const (
	OpRAX       = 0
	OpRCX       = 1
	OpRDX       = 2
	OpR8        = 8
	OpR9        = 9
	OpR10       = 10
	OpR11       = 11
	OpR12       = 12
	OpR13       = 13
	OpTDR       = 128
	OpTDCX      = 129
	OpTDVPR     = 130
	OpTDCS      = 144
	OpTDVPS     = 145
	OpSEPTTree  = 146
	OpSEPTEntry = 147
	OpTDEpoch   = 169
	OpOpState   = 172
	OpKOT       = 186
	OpWBCache   = 188
)

var statusNames = map[Status]string{
	Success: "TDX_SUCCESS", InterruptedResumable: "TDX_INTERRUPTED_RESUMABLE",
	InterruptedRestartable: "TDX_INTERRUPTED_RESTARTABLE", OperandInvalid: "TDX_OPERAND_INVALID",
	OperandAddrRangeError: "TDX_OPERAND_ADDR_RANGE_ERROR", OperandBusy: "TDX_OPERAND_BUSY",
	PreviousTLBEpochBusy: "TDX_PREVIOUS_TLB_EPOCH_BUSY", SysBusy: "TDX_SYS_BUSY",
	PageMetadataIncorrect: "TDX_PAGE_METADATA_INCORRECT", PageAlreadyFree: "TDX_PAGE_ALREADY_FREE",
	PageNotOwnedByTD: "TDX_PAGE_NOT_OWNED_BY_TD", PageNotFree: "TDX_PAGE_NOT_FREE",
	HPARangeNotFree: "TDX_HPA_RANGE_NOT_FREE", NoPAMTPagePair: "TDX_NO_PAMT_PAGE_PAIR",
	PAMTPageNotEmpty: "TDX_PAMT_PAGE_NOT_EMPTY", MissingPAMTPagePair: "TDX_MISSING_PAMT_PAGE_PAIR",
	TDAssociatedPagesExist: "TDX_TD_ASSOCIATED_PAGES_EXIST", SysNotReady: "TDX_SYS_NOT_READY",
	TDFatal: "TDX_TD_FATAL", TDCSNotAllocated: "TDX_TDCS_NOT_ALLOCATED",
	LifecycleStateIncorrect: "TDX_LIFECYCLE_STATE_INCORRECT", OpStateIncorrect: "TDX_OP_STATE_INCORRECT",
	NoVCPUs: "TDX_NO_VCPUS", TDCXNumIncorrect: "TDX_TDCX_NUM_INCORRECT",
	VCPUStateIncorrect: "TDX_VCPU_STATE_INCORRECT", VCPUAssociated: "TDX_VCPU_ASSOCIATED",
	VCPUNotAssociated: "TDX_VCPU_NOT_ASSOCIATED", MaxVCPUsExceeded: "TDX_MAX_VCPUS_EXCEEDED",
	TDKeysNotConfigured: "TDX_TD_KEYS_NOT_CONFIGURED", KeyStateIncorrect: "TDX_KEY_STATE_INCORRECT",
	KeyConfigured: "TDX_KEY_CONFIGURED", WBCacheNotComplete: "TDX_WBCACHE_NOT_COMPLETE",
	HKIDNotFree: "TDX_HKID_NOT_FREE", NoHKIDReadyToWBCache: "TDX_NO_HKID_READY_TO_WBCACHE",
	WBCacheResumeError: "TDX_WBCACHE_RESUME_ERROR", FlushVPNotDone: "TDX_FLUSHVP_NOT_DONE",
	EPTWalkFailed: "TDX_EPT_WALK_FAILED", EPTEntryNotPresent: "TDX_EPT_ENTRY_NOT_PRESENT",
	GPARangeNotBlocked: "TDX_GPA_RANGE_NOT_BLOCKED", GPARangeAlreadyBlocked: "TDX_GPA_RANGE_ALREADY_BLOCKED",
	TLBTrackingNotDone: "TDX_TLB_TRACKING_NOT_DONE", EPTInvalidPromoteCondition: "TDX_EPT_INVALID_PROMOTE_CONDITIONS",
	PageAlreadyAccepted: "TDX_PAGE_ALREADY_ACCEPTED", PageSizeMismatch: "TDX_PAGE_SIZE_MISMATCH",
	EPTEntryStateIncorrect: "TDX_EPT_ENTRY_STATE_INCORRECT", EPTPageNotFree: "TDX_EPT_PAGE_NOT_FREE",
	SEAMCALLVMFailInvalid: "TDX_SEAMCALL_VMFAILINVALID",
}

var operandNames = map[uint32]string{
	OpRAX: "RAX", OpRCX: "RCX", OpRDX: "RDX", 3: "RBX", 5: "RBP", 6: "RSI", 7: "RDI",
	OpR8: "R8", OpR9: "R9", OpR10: "R10", OpR11: "R11", OpR12: "R12", OpR13: "R13", 14: "R14", 15: "R15",
	95: "PAGE", OpTDR: "TDR", OpTDCX: "TDCX", OpTDVPR: "TDVPR", OpTDCS: "TDCS", OpTDVPS: "TDVPS",
	OpSEPTTree: "SEPT_TREE", OpSEPTEntry: "SEPT_ENTRY", OpTDEpoch: "TD_EPOCH", OpOpState: "OP_STATE",
	OpKOT: "KOT", OpWBCache: "WBCACHE",
}

// operandStatuses are the codes whose low 32 bits name an operand.
func (s Status) hasOperand() bool {
	switch s.Code() {
	case OperandInvalid, OperandAddrRangeError, OperandBusy, PageMetadataIncorrect,
		PageNotFree, HPARangeNotFree, NoPAMTPagePair, MissingPAMTPagePair, EPTWalkFailed,
		EPTEntryNotPresent, GPARangeNotBlocked, GPARangeAlreadyBlocked, TLBTrackingNotDone,
		EPTInvalidPromoteCondition, EPTEntryStateIncorrect, EPTPageNotFree:
		return true
	}
	return false
}

// Code returns the status without its operand id.
func (s Status) Code() Status { return s & StatusMask }

// Operand returns the operand id or detail (low 32 bits).
func (s Status) Operand() uint32 { return uint32(s) }

// IsError reports bit 63: the call failed (informational codes have it clear).
func (s Status) IsError() bool { return s>>63 != 0 }

// HasCode reports whether s has the same code as c, ignoring operand ids.
func (s Status) HasCode(c Status) bool { return s.Code() == c.Code() }

// With returns s with an operand id (api_error_with_operand_id).
func (s Status) With(op uint32) Status { return s.Code() | Status(op) }

// String prints the name and operand, e.g. TDX_OPERAND_BUSY(RCX).
func (s Status) String() string {
	name, ok := statusNames[s.Code()]
	if !ok {
		return fmt.Sprintf("TDX_STATUS(0x%016x)", uint64(s))
	}
	if s.Operand() == 0 && !s.hasOperand() {
		return name
	}
	if s.hasOperand() {
		if op, ok := operandNames[s.Operand()]; ok {
			return name + "(" + op + ")"
		}
	}
	return fmt.Sprintf("%s(0x%x)", name, s.Operand())
}

// Error lets a Status be returned as an error by wrappers.
func (s Status) Error() string { return s.String() }

// StatusByName returns the status (without operand) named name, e.g.
// "TDX_OPERAND_BUSY".
func StatusByName(name string) (Status, bool) {
	for _, s := range slices.Sorted(maps.Keys(statusNames)) { // sorted: a name maps to one status
		if statusNames[s] == name {
			return s, true
		}
	}
	return 0, false
}
