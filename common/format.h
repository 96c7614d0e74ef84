// Small text formatting shared by messages that name a value.
#pragma once

#include <cstdio>
#include <string>

namespace kvferry {

// A number as printf's %g writes it: "0.5", "2", "1e+09" (not "5E-1").
inline std::string shortNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

}  // namespace kvferry
