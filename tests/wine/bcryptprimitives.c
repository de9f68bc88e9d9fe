/*
 * bcryptprimitives.dll for Wine 8 (Debian 12), which lacks it (Wine 9.0 added it).
 *
 * Rust's std on Windows (1.78 and later) takes its random keys for HashMap from
 * ProcessPrng in bcryptprimitives.dll, which every Windows 10 and later has. Wine 8
 * refuses to load btcagent.exe without it, so scripts/test-wine.sh builds this file with
 * mingw-w64 and puts the DLL next to the .exe under test, only there. It is a test
 * fixture: the shipped btcagent.exe uses Windows' own DLL.
 */
#include <windows.h>

/* advapi32's RtlGenRandom, which Wine 8 has. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
	while (length > 0) {
		ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
		if (!SystemFunction036(data, chunk))
			return FALSE;
		data += chunk;
		length -= chunk;
	}
	return TRUE;
}
